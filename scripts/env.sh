# shellcheck shell=bash
# Sourced by the lab and test commands: installs what is missing (Debian packages, a pinned
# virtualenv outside the checkout) and sets the environment they run in. Safe to source twice.
set -euo pipefail
LITEBOXD_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export LITEBOXD_ROOT
export LITEBOXD_CACHE="${LITEBOXD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/liteboxd}"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$LITEBOXD_ROOT/lab/containers.conf}"
export ANSIBLE_CONFIG="$LITEBOXD_ROOT/ansible.cfg"
# Cilium's CRDs for the API servers (tests and lab): a path relative to the checkout, as .ci/run
# gives it, must still hold in playbooks and scenarios that run from other directories.
if [[ -n "${LITEBOXD_CILIUM_CRDS:-}" ]]; then
  if [[ -d "$LITEBOXD_ROOT/$LITEBOXD_CILIUM_CRDS" ]]; then
    LITEBOXD_CILIUM_CRDS=$(realpath "$LITEBOXD_ROOT/$LITEBOXD_CILIUM_CRDS")
  elif [[ -d "$LITEBOXD_CILIUM_CRDS" ]]; then
    LITEBOXD_CILIUM_CRDS=$(realpath "$LITEBOXD_CILIUM_CRDS")
  else
    echo "LITEBOXD_CILIUM_CRDS=$LITEBOXD_CILIUM_CRDS is not a directory (absolute, or relative to $LITEBOXD_ROOT)" >&2
    exit 2
  fi
  export LITEBOXD_CILIUM_CRDS
fi
mkdir -p "$LITEBOXD_CACHE"

# Each step says when it began, in seconds since the script started.
step() { printf '\n==> %s [%ss]\n' "$*" "$SECONDS" >&2; }

apt_packages=(podman runc netavark aardvark-dns mmdebstrap nftables iptables iproute2 tcpdump conntrack git rsync jq
              golang-go make dpkg-dev etcd-server nginx-light wrk shellcheck
              python3-venv python3-netaddr gnupg containerd openssh-client)
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if ((${#missing[@]})); then
  step "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# make_venv DIR DESCRIPTION VENV-ARGS... -- PIP-ARGS...: a virtualenv made once and kept; one
# creator at a time (concurrent commands wait for the first one's).
make_venv() {
  local dir=$1 description=$2 lock
  shift 2
  local venv_args=() pip_args=()
  while [[ $1 != -- ]]; do venv_args+=("$1"); shift; done
  shift
  pip_args=("$@")
  [[ -e "$dir/.complete" ]] && return 0
  exec {lock}>"$dir.lock"
  flock "$lock"
  if [[ ! -e "$dir/.complete" ]]; then
    step "creating $description: $dir"
    rm -rf "$dir"
    "${venv_args[@]}" "$dir"
    "$dir/bin/pip" install -q --upgrade pip
    "$dir/bin/pip" install -q "${pip_args[@]}"
    touch "$dir/.complete"
  fi
  flock -u "$lock"
}

python=${LITEBOXD_PYTHON:-python3}
req_key=$(cat "$LITEBOXD_ROOT"/requirements/*.txt 2>/dev/null \
          | cat - <("$python" --version) | sha256sum | cut -c1-12)
venv="$LITEBOXD_CACHE/venv-$req_key"
make_venv "$venv" "the Python environment (pinned requirements, about a minute)" \
  "$python" -m venv -- -r "$LITEBOXD_ROOT/requirements/dev.txt"
# The gateway package is imported from this checkout (its dependencies are in requirements/dev.txt),
# so one virtualenv serves any number of checkouts.
export PYTHONPATH="$LITEBOXD_ROOT/gateway/src${PYTHONPATH:+:$PYTHONPATH}"
export VIRTUAL_ENV="$venv"
export PATH="$venv/bin:$PATH"

# Debian 12's python3 with its python3-netaddr (what the roles install on hosts)
# and only ansible-core beside them: the netlink modules' tests run once more under it.
ansible_core=$(grep -i '^ansible-core==' "$LITEBOXD_ROOT/requirements/controller.txt")
debian_python="$LITEBOXD_CACHE/debian-python-$(echo "$ansible_core" | sha256sum | cut -c1-12)"
make_venv "$debian_python" "Debian's python3 with its netlink libraries and pinned ansible-core" \
  /usr/bin/python3 -m venv --system-site-packages -- "$ansible_core"
export LITEBOXD_DEBIAN_PYTHON="$debian_python/bin/python"
