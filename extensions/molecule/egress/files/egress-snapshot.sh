#!/bin/sh
# The host state the egress roles may touch, as one text document (compared before/after).
echo "== ip rule";          ip -j rule show
echo "== ip route";         ip -4 -j route show table all   # IPv4: a re-created tunnel device gets a new fe80 address
echo "== nft";              nft list ruleset
echo "== sysctl";           sysctl -a 2>/dev/null | grep -E '\.(rp_filter|ignore_routes_with_linkdown|ip_forward) ' | sort
echo "== sysctl.d";         (cd /etc/sysctl.d && md5sum -- *)
echo "== rt_tables.d";      ls -A /etc/iproute2/rt_tables.d 2>/dev/null
echo "== nftables.d";       ls -A /etc/nftables.d 2>/dev/null
echo "== units";            ls /etc/systemd/system /etc/systemd/system/multi-user.target.wants
echo "== liteboxd";         ls -AR /etc/liteboxd /var/lib/liteboxd /usr/local/sbin 2>/dev/null
exit 0
