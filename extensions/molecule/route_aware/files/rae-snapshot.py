#!/usr/bin/python3
"""Print everything route-aware egress may touch on this host as JSON (for before/after checks)."""
import json
import os
import subprocess


def run(*argv):
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def ip_json(*args):
    out = run("ip", "-j", *args).strip()
    return json.loads(out) if out else []


# Sorted by name: a restarted container gets its interfaces back in another index order.
links = sorted(({key: link.get(key) for key in ("ifname", "link_type", "mtu", "linkinfo")} for link in ip_json("-d", "link", "show")),
               key=lambda link: link["ifname"])
print(json.dumps({
    "links": links,
    # IPv4 only: IPv6 link-local addresses follow MAC addresses, which a reboot of the container renews.
    "addresses": sorted((a["ifname"], sorted(i["local"] for i in a.get("addr_info", []))) for a in ip_json("-4", "addr", "show")),
    "rules": ip_json("-4", "rule", "show"),
    "routes": ip_json("-4", "route", "show", "table", "all"),
    "permanent_neighbours": [n for n in ip_json("-4", "neigh", "show") if "PERMANENT" in n.get("state", [])],
    "nft": run("nft", "list", "ruleset"),
    "ip_forward": open("/proc/sys/net/ipv4/ip_forward").read().strip(),
    "files": sorted(p for p in ("/etc/liteboxd/cube-router", "/etc/systemd/system/liteboxd-cube-router.service",
                                "/etc/systemd/system/multi-user.target.wants/liteboxd-cube-router.service")
                    if os.path.lexists(p)),
}, indent=1, sort_keys=True))
