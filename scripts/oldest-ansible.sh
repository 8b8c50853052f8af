#!/usr/bin/env bash
# The declared range's bottom: the unit tests, ansible-test sanity and ansible-lint (production) on
# the oldest ansible-core the collection claims (requirements/oldest.txt), in a virtualenv of its own
# (made once, cached like the main one). scripts/test runs the same three on the newest
# (requirements/controller.txt). ansible-lint takes the dependency collections (ansible.posix,
# kubernetes.core, ...) from the main virtualenv's pinned `ansible` package, as Galaxy is unreachable.
source "$(dirname "$0")/env.sh"
cd "$LITEBOXD_ROOT" || exit 1
main_site=$("$VIRTUAL_ENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
controller_pins=$(grep -v -e '^#' -e '^ansible-core' requirements/controller.txt)
oldest_key=$(cat requirements/oldest.txt requirements/test.txt <(echo "$controller_pins") \
             | cat - <("${LITEBOXD_PYTHON:-python3}" --version) | sha256sum | cut -c1-12)
oldest="$LITEBOXD_CACHE/venv-oldest-$oldest_key"
# shellcheck disable=SC2086 # the pins are separate arguments
make_venv "$oldest" "the oldest claimed ansible-core's virtualenv (about a minute)" \
  "${LITEBOXD_PYTHON:-python3}" -m venv -- -r requirements/oldest.txt $controller_pins
export VIRTUAL_ENV="$oldest" PATH="$oldest/bin:$PATH"
ANSIBLE_COLLECTIONS_PATH="$("$oldest/bin/python" -c 'from tests.lib.collection import install_on_path; print(install_on_path())'):$main_site"
export ANSIBLE_COLLECTIONS_PATH
core="ansible-core $(python -c 'from ansible.release import __version__; print(__version__)')"

step "unit tests on $core"
python -m pytest -q -p no:cacheprovider tests/unit

step "ansible-lint, production profile, on $core"
ansible-lint --profile production

step "ansible-test sanity on $core"
LITEBOXD_ANSIBLE_VENV="$oldest" bash scripts/sanity.sh
