#!/usr/bin/env bash
# Builds the lab hosts' image (Debian bookworm with systemd as PID 1) from Debian's packages:
# there is no image registry here. Cached as a `podman save` archive outside the checkout and
# keyed by the package list, so later runs load it in a second.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/lab/containers.conf}"
cache="${LITEBOXD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/liteboxd}"
image="${LITEBOXD_LAB_IMAGE:-localhost/liteboxd-lab:bookworm}"
packages=etcd-server,python3,python3-apt,python3-netaddr,iproute2,iptables,nftables,procps,systemd-sysv,dbus,iputils-ping,sudo,kmod,tcpdump,curl,conntrack,ca-certificates,netcat-openbsd,python3-venv
# sshd: the lab command reaches its hosts over SSH, as a deployment does (README, "The lab over SSH").
packages+=,openssh-server
key=$(printf '%s\n%s\n' "$packages" "$(sha256sum "$0" | cut -c1-16)" | sha256sum | cut -c1-12)
archive="$cache/lab-image-$key.tar"
log() { printf '[lab-image] %s\n' "$*" >&2; }

if podman image exists "$image" && [[ "$(podman image inspect -f '{{index .Labels "io.liteboxd.lab.key"}}' "$image" 2>/dev/null)" == "$key" ]]; then
  log "$image is current ($key)"
  exit 0
fi
if [[ -s "$archive" ]]; then
  log "loading $image from $archive"
  # The archive keeps the name it was saved under (another LITEBOXD_LAB_IMAGE, maybe): name it $image.
  loaded=$(podman load -q -i "$archive" | sed -n 's/^Loaded image[^:]*: *//p' | head -n1)
  [[ -n "$loaded" && "$loaded" != "$image" ]] && podman tag "$loaded" "$image"
  exit 0
fi
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
mirror=${mirror:-http://deb.debian.org/debian}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# No host keys in the image: each host makes its own when sshd first starts, so no two share one.
cat >"$work/ssh-host-keys.conf" <<'EOF'
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
EOF
# Keys only, and no root login: the lab inventory logs in as a sudoer, as an operator does.
cat >"$work/sshd-lab.conf" <<'EOF'
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
EOF
log "building $image with mmdebstrap from $mirror (about 100 s)"
# shellcheck disable=SC2016  # "$1" is the chroot path, expanded by mmdebstrap's hook, not here
mmdebstrap --variant=minbase --include="$packages" \
  --customize-hook='chroot "$1" systemctl mask systemd-networkd-wait-online.service getty@.service console-getty.service >/dev/null 2>&1 || true' \
  --customize-hook='rm -f "$1"/etc/ssh/ssh_host_*' \
  --customize-hook='mkdir -p "$1/etc/systemd/system/ssh.service.d"' \
  --customize-hook="upload $work/ssh-host-keys.conf /etc/systemd/system/ssh.service.d/host-keys.conf" \
  --customize-hook="upload $work/sshd-lab.conf /etc/ssh/sshd_config.d/lab.conf" \
  bookworm "$work/rootfs.tar" "$mirror" 2>&1 | while read -r line; do case "$line" in I:*) log "${line#I: }";; esac; done
log "importing into podman"
podman import -q --change 'CMD ["/sbin/init"]' --change "LABEL io.liteboxd.lab.key=$key" \
  --change 'ENV container=podman' "$work/rootfs.tar" "$image" >/dev/null
mkdir -p "$cache"
rm -f "$cache"/lab-image-*.tar
podman save -q -o "$archive.tmp" "$image" && mv "$archive.tmp" "$archive"
log "saved $archive"
