# -*- coding: utf-8 -*-
# Copyright: (c) 2026, LiteBoxd platform team
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read the route-aware egress state of this host in the canonical forms of ``cube_router``: links,
addresses, neighbours, routes and rules from one netlink session (``netlink``, parsed by
``routing``), the firewall and the steering loop from ``nft -j`` and ``tc -j``; and the host facts the
address rules need."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import socket

from ansible_collections.liteboxd.sandbox_network.plugins.module_utils.cube_router import (
    DEVICE_MAC,
    NFT_TABLE,
    canonical_json,
    empty_state,
    operator_routes,
    operator_rules,
    own_routes,
    record_route,
    route_record,
    steering_text,
    strip_handles,
    tunnel_state_text,
)
from ansible_collections.liteboxd.sandbox_network.plugins.module_utils.netlink import Session
from ansible_collections.liteboxd.sandbox_network.plugins.module_utils.routing import (
    DECLARABLE_ROUTE_TYPES,
    route_from_msg,
    route_text,
    rule_from_msg,
    rule_text,
)

LOCAL_TABLE = 255
NUD_PERMANENT = 0x80
IFF_UP = 0x1


def _sysctl(name):
    try:
        with open("/proc/sys/" + name.replace(".", "/")) as handle:
            return handle.read().strip()
    except IOError:
        return None


def _link_info(link):
    return link["attrs"].get("IFLA_LINKINFO") or {}


def link_name(link):
    return link["attrs"].get("IFLA_IFNAME")


def decode_tunnel(link, names_with_mtu, addresses, link_names):
    """A link message (``netlink.decode``d) in ``tunnel_state_text`` form, or None if it is no vxlan/gre link."""
    info = _link_info(link)
    kind, data = info.get("IFLA_INFO_KIND"), info.get("IFLA_INFO_DATA")
    name = link_name(link)
    if kind == "vxlan" and data is not None:
        tunnel = {"kind": "vxlan", "vni": data.get("IFLA_VXLAN_ID"), "local": data.get("IFLA_VXLAN_LOCAL"),
                  "remote": data.get("IFLA_VXLAN_GROUP"), "dstport": data.get("IFLA_VXLAN_PORT"),
                  "dev": link_names.get(data.get("IFLA_VXLAN_LINK"))}
    elif kind == "gre" and data is not None:
        tunnel = {"kind": "gre", "local": data.get("IFLA_GRE_LOCAL"), "remote": data.get("IFLA_GRE_REMOTE"),
                  "ttl": data.get("IFLA_GRE_TTL"), "key": data.get("IFLA_GRE_OKEY") or None}
    else:
        return None
    tunnel.update(name=name, mtu=link["attrs"].get("IFLA_MTU") if name in names_with_mtu else None)
    own = [a for a in addresses if a["dev"] == name]
    if own:
        tunnel["address"] = own[0]["address"]
    return tunnel


class HostReader(object):
    """One netlink snapshot of the host's IPv4 state; ``run`` is AnsibleModule.run_command."""

    def __init__(self, run):
        self.run = run
        with Session() as kernel:
            self.links = kernel.links()
            self.names = kernel.ifnames()
            self.addresses = [
                {"address": "%s/%d" % (a["attrs"].get("IFA_ADDRESS"), a["prefixlen"]), "dev": self.names.get(a["index"])}
                for a in kernel.dump("address", socket.AF_INET)]
            self.neighbours = kernel.dump("neighbour", socket.AF_INET)
            # The kernel's local and broadcast routes are never cube-router's.
            self.routes = [r for r in (route_from_msg(m, self.names) for m in kernel.dump("route", socket.AF_INET))
                           if r is not None and r.table != LOCAL_TABLE and r.type in DECLARABLE_ROUTE_TYPES]
            self.rules = [rule_from_msg(m) for m in kernel.dump("rule", socket.AF_INET)]

    def link(self, name):
        for link in self.links:
            if link_name(link) == name:
                return link
        return None

    # ----- what the address rules look at -----

    def forwarding(self):
        return _sysctl("net.ipv4.ip_forward")

    def device_kind(self, name):
        link = self.link(name)
        return _link_info(link).get("IFLA_INFO_KIND") if link is not None else None

    # ----- the cube-router state, for every spec in ``specs`` (current and previous) -----

    def state(self, specs):
        state = empty_state()
        routes, rules = set(), set()
        for spec in specs:
            device = spec["device"]
            link = self.link(device)
            if link is not None:
                mac = link["attrs"].get("IFLA_ADDRESS")
                conf = "net.ipv4.conf.%s." % device.replace(".", "/")
                state["device"] = "%s kind %s %s rp_filter %s accept_local %s" % (
                    device, self.device_kind(device), "up" if link["flags"] & IFF_UP else "down",
                    _sysctl(conf + "rp_filter"), _sysctl(conf + "accept_local"))
                state["addresses"] += ["%s dev %s" % (a["address"], device) for a in self.addresses if a["dev"] == device]
                for neigh in self.neighbours:
                    if neigh["ifindex"] == link["index"]:
                        lladdr = neigh["attrs"].get("NDA_LLADDR")
                        state["neighbours"].append("%s lladdr %s dev %s nud %s" % (
                            neigh["attrs"].get("NDA_DST"), DEVICE_MAC if lladdr == mac else lladdr, device,
                            "permanent" if neigh["state"] & NUD_PERMANENT else "dynamic"))
                state["steering"] += self._steering(device)
            keys = set(r.key for r in own_routes(spec) + operator_routes(spec))
            routes.update(route_text(r) for r in self.routes if r.key in keys or r.table == spec["route_table"])
            prefixes = (spec["rule_priority"], spec["rule_priority"] + 1, spec["rule_priority"] + 2)
            wanted_rules = set(rule_text(r) for r in operator_rules(spec))
            rules.update(rule_text(r) for r in self.rules
                         if r is not None and (r.priority in prefixes or rule_text(r) in wanted_rules))
            with_mtu = set(t["name"] for t in spec["tunnels"] if t.get("mtu"))
            for tunnel in spec["tunnels"]:
                link = self.link(tunnel["name"])
                decoded = decode_tunnel(link, with_mtu, self.addresses, self.names) if link is not None else None
                if decoded is not None:
                    state["tunnels"].append(tunnel_state_text(decoded))
                elif link is not None:
                    state["tunnels"].append("%s kind %s" % (tunnel["name"], self.device_kind(tunnel["name"])))
        for key in ("addresses", "neighbours", "steering", "tunnels"):
            state[key] = sorted(set(state[key]))
        state["routes"], state["rules"] = sorted(routes), sorted(rules)
        if self.forwarding() is not None:
            state["sysctl"] = {"net.ipv4.ip_forward": self.forwarding()}
        state["firewall"] = self.nft_text()
        return state

    def _steering(self, device):
        rc, out, err = self.run(["tc", "-j", "filter", "show", "dev", device, "egress"])
        found = []
        for item in json.loads(out or "[]") if rc == 0 else []:
            for action in (item.get("options") or {}).get("actions") or []:
                if (action.get("kind") == "mirred" and action.get("direction") == "ingress"
                        and action.get("mirred_action") == "redirect"):
                    found.append(steering_text(action.get("to_dev")) if action.get("to_dev") == device
                                 else "dev %s egress mirred ingress redirect dev %s" % (device, action.get("to_dev")))
        return found

    def nft_text(self):
        rc, out, err = self.run(["nft", "list", "table", "ip", NFT_TABLE])
        return out if rc == 0 else ""

    def nft_json(self):
        """The owned table as canonical JSON without handles ('' when the table is absent)."""
        rc, out, err = self.run(["nft", "-j", "list", "table", "ip", NFT_TABLE])
        if rc != 0:
            return ""
        return canonical_json(strip_handles(json.loads(out)["nftables"][1:]))

    def replaced_routes(self, spec, previous_routes):
        """Host routes (as state records) that ``spec``'s operator routes would replace (same key),
        other than the routes (records) a previous run installed: they are restored on removal."""
        ours = set(route_text(record_route(r)) for r in previous_routes)
        wanted = dict((r.key, route_text(r)) for r in operator_routes(spec))
        return [route_record(r) for r in self.routes
                if r.key in wanted and route_text(r) != wanted[r.key] and route_text(r) not in ours]


def dummy_available():
    """Without touching the host (check mode): is the dummy link type loaded or installable?"""
    if os.path.isdir("/sys/module/dummy"):
        return True
    release = os.uname()[2]
    for name in ("modules.dep", "modules.builtin"):
        try:
            with open(os.path.join("/lib/modules", release, name)) as handle:
                if "/dummy.ko" in handle.read():
                    return True
        except IOError:
            continue
    return False
