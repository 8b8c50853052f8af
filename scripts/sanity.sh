#!/usr/bin/env bash
# ansible-test sanity on this checkout. ansible-test needs the collection at
# .../ansible_collections/<namespace>/<name>, so the tracked and new files are copied there.
# Extra arguments go to ansible-test (e.g. --test validate-modules). LITEBOXD_ANSIBLE_VENV names
# another virtualenv whose ansible-test runs it (scripts/oldest-ansible.sh: the oldest ansible-core).
source "$(dirname "$0")/env.sh"
cd "$LITEBOXD_ROOT" || exit 1
VIRTUAL_ENV=${LITEBOXD_ANSIBLE_VENV:-$VIRTUAL_ENV}
PATH="$VIRTUAL_ENV/bin:$PATH"
# A tree per run: concurrent runs (two checkouts, or two developers' sessions) must not share it.
run_dir=$(mktemp -d "$LITEBOXD_CACHE/sanity.XXXXXX")
trap 'rm -rf "$run_dir"' EXIT
tree="$run_dir/ansible_collections/liteboxd/sandbox_network"
mkdir -p "$tree"
git ls-files -z --cached --others --exclude-standard | rsync -a --from0 --files-from=- ./ "$tree/"
get_pip_version=$("$VIRTUAL_ENV/bin/python" -c "import inspect, re, ansible_test._internal.python_requirements as m
print(re.search(r\"pip='([0-9.]+)'\", inspect.getsource(m)).group(1))")
get_pip="$HOME/.ansible/test/cache/get_pip_${get_pip_version//./_}.py"
mkdir -p "$(dirname "$get_pip")" && cp scripts/ansible-test-get-pip.py "$get_pip"
cd "$tree" || exit 1
git init -q && git add -A  # ansible-test lists the collection's files through git
step "ansible-test sanity (python $("$VIRTUAL_ENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])'))"
ansible-test sanity --color no --python "$("$VIRTUAL_ENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" \
  --requirements --exclude extensions/molecule/resources/files/lab-echo.py "$@"
