#!/usr/bin/env bash
# Builds the collection artefact, installs it into a scratch collections path, and proves its
# plugins load from there (not from this checkout): every module's and filter's documentation
# through ansible-doc, and a module and a filter run by ansible itself.
source "$(dirname "$0")/env.sh"
cd "$LITEBOXD_ROOT" || exit 1
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
ansible-galaxy collection build --force --output-path "$out" >/dev/null
artefacts=("$out"/liteboxd-sandbox_network-*.tar.gz)
artefact=${artefacts[0]}
echo "built $(basename "$artefact") ($(du -k "$artefact" | cut -f1) KiB)"
export ANSIBLE_COLLECTIONS_PATH="$out/collections"
ansible-galaxy collection install --no-deps -p "$out/collections" "$artefact" >/dev/null
installed="$out/collections/ansible_collections/liteboxd/sandbox_network"
for leaked in tests .ci scripts; do
  [[ ! -e "$installed/$leaked" ]] || { echo "artefact contains $leaked (build_ignore)" >&2; exit 1; }
done
modules=$(find plugins/modules -maxdepth 1 -name '*.py' ! -name '__init__.py' -printf '%f\n' | sed 's/\.py$//' | sort)
for module in $modules; do
  ansible-doc -t module "liteboxd.sandbox_network.$module" >/dev/null
done
listed_filters=$(ansible-doc -t filter -l liteboxd.sandbox_network 2>/dev/null | awk '{print $1}')
for module in $modules; do
  ansible-doc -t module -l liteboxd.sandbox_network | grep -q "^liteboxd.sandbox_network.$module " \
    || { echo "module $module not listed from the artefact" >&2; exit 1; }
done
cat > "$out/load.yml" <<'PLAY'
- name: Run plugins from the installed artefact
  hosts: localhost
  gather_facts: false
  tasks:
    - name: A module (check mode, nothing declared)
      liteboxd.sandbox_network.policy_routing:
        routes: []
      check_mode: true
      register: load_module
    - name: A filter
      ansible.builtin.assert:
        that:
          - load_module is not changed
          - ('192.168.0.0/18' | liteboxd.sandbox_network.cube_router_addresses).nat_ip == '192.168.63.254'
PLAY
cd "$out" && printf '[defaults]\n' > ansible.cfg
ANSIBLE_CONFIG="$out/ansible.cfg" ansible-playbook -c local -i localhost, \
  -e ansible_python_interpreter="$VIRTUAL_ENV/bin/python" load.yml >/dev/null
echo "loaded from the artefact: $(echo "$modules" | wc -l) modules ($(echo "$modules" | paste -sd,)), filters: $(echo "$listed_filters" | paste -sd,)"
playbooks=()
for playbook in "$LITEBOXD_ROOT"/playbooks/*.yml; do
  name=$(basename "$playbook" .yml)
  if [[ $name == lab ]]; then continue; fi  # the lab's own proof, not a platform playbook
  ANSIBLE_CONFIG="$out/ansible.cfg" ansible-playbook -i "$LITEBOXD_ROOT/inventories/example" \
    "liteboxd.sandbox_network.$name" --syntax-check >/dev/null
  playbooks+=("liteboxd.sandbox_network.$name")
done
echo "playbooks importable from the artefact with the example inventory: ${playbooks[*]}"
