#!/usr/bin/env bash
# The execution environment as far as this machine allows (no container registry, so no image
# build): `ansible-builder create` on execution-environment.yml with the collection artefact next to
# it, then the Python requirements the image build would install, resolved together with pip into
# a scratch virtualenv (dry run): the EE's own pins, and what `ansible-builder introspect` collects
# from the installed collections, this one's and its dependencies' (ansible.posix, kubernetes.core,
# taken from the pinned `ansible` package since Galaxy is unreachable).
source "$(dirname "$0")/env.sh"
cd "$LITEBOXD_ROOT" || exit 1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
context="$work/definition"
mkdir -p "$context/requirements"
cp execution-environment.yml "$context/"
cp requirements/controller.txt "$context/requirements/"
ansible-galaxy collection build --force --output-path "$context" >/dev/null

step "ansible-builder create"
ansible-builder create -f "$context/execution-environment.yml" -c "$work/context" --output-filename Containerfile >/dev/null
for made in Containerfile _build/requirements.yml _build/requirements.txt _build/scripts/introspect.py; do
  [[ -s "$work/context/$made" ]] || { echo "ansible-builder create made no $made" >&2; exit 1; }
done
built=("$work/context/_build/collections"/liteboxd-sandbox_network-*.tar.gz)
[[ -s ${built[0]} ]] || { echo "the collection artefact is not in the build context" >&2; exit 1; }
echo "context: Containerfile, galaxy requirements ($(grep -c 'name:' "$work/context/_build/requirements.yml") collections), $(basename "${built[0]}")"

step "ansible-builder introspect: this collection, ansible.posix, kubernetes.core"
collections="$work/collections"
ANSIBLE_COLLECTIONS_PATH="$collections" ansible-galaxy collection install --no-deps -p "$collections" "${built[0]}" >/dev/null
bundled=$("$VIRTUAL_ENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/ansible_collections
for dependency in ansible/posix kubernetes/core; do
  mkdir -p "$collections/ansible_collections/$(dirname "$dependency")"
  cp -r "$bundled/$dependency" "$collections/ansible_collections/$dependency"
done
ansible-builder introspect --sanitize --user-pip "$work/context/_build/requirements.txt" \
  --write-pip "$work/python-requirements.txt" --write-bindep "$work/bindep.txt" "$collections" >/dev/null
for needed in kubernetes netaddr jsonpatch; do
  grep -qi "^$needed" "$work/python-requirements.txt" || { echo "introspection lost $needed" >&2; exit 1; }
done
sed 's/^/  /' "$work/python-requirements.txt"

step "pip resolves them together (dry run into a scratch virtualenv)"
python3 -m venv "$work/venv"
ansible_core=$(sed -n 's/^ *package_pip: *\(ansible-core==.*\)$/\1/p' execution-environment.yml)
ansible_runner=$(sed -n 's/^ *package_pip: *\(ansible-runner==.*\)$/\1/p' execution-environment.yml)
"$work/venv/bin/pip" install -q --disable-pip-version-check --dry-run --ignore-installed --report "$work/report.json" \
  "$ansible_core" "$ansible_runner" -r "$work/python-requirements.txt"
"$work/venv/bin/python" - "$work/report.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
chosen = sorted("%s==%s" % (item["metadata"]["name"], item["metadata"]["version"]) for item in report["install"])
print("resolved %d distributions: %s" % (len(chosen), ", ".join(chosen)))
PY
