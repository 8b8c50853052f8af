#!/bin/sh
# Removes what Cilium (and K3s's CNI) leave on a node after K3s is uninstalled: cilium_* and lxc*
# interfaces, CILIUM_* iptables chains and rules, cilium nft tables, /etc/cni/net.d and /var/lib/cni.
# Prints one line per thing removed; with --dry-run it only prints them.
set -eu
dry_run=false
[ "${1:-}" = "--dry-run" ] && dry_run=true

act() {  # act <description> <command...>
  description=$1
  shift
  echo "$description"
  $dry_run || "$@"
}

for link in $(ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -E '^(cilium_|lxc)' || true); do
  # Deleting one end of a veth removes its peer too.
  ip link show "$link" >/dev/null 2>&1 && act "link $link" ip link delete "$link"
done

for tool in iptables ip6tables; do
  command -v "$tool-save" >/dev/null 2>&1 || continue
  if "$tool-save" 2>/dev/null | grep -q CILIUM_; then
    # Cilium's documented cleanup: drop every line that names one of its chains.
    act "$tool CILIUM_* chains" sh -c "$tool-save | grep -v CILIUM_ | $tool-restore"
  fi
done

if command -v nft >/dev/null 2>&1; then
  nft list tables 2>/dev/null | while read -r _ family name; do
    case "$name" in
      cilium*) act "nft table $family $name" nft delete table "$family" "$name" ;;
    esac
  done
fi

for dir in /etc/cni/net.d /var/lib/cni; do
  [ -e "$dir" ] && act "directory $dir" rm -rf "$dir"
done
exit 0
