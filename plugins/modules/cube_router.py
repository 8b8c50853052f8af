#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, LiteBoxd platform team
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: cube_router
short_description: Route-aware sandbox egress through a cube-router device (CubeSandbox style)
version_added: 0.1.0
author:
  - LiteBoxd platform team (@liteboxd)
description:
  - Makes sandbox egress follow the host's routing table instead of always leaving by the primary NIC,
    the way CubeSandbox's cube-router does. Traffic from O(sandbox_sources) is normalised to an internal
    NAT IP, handed to the kernel through the cube-router device (so it appears first on that device), routed
    by the host's routes to any device (second NIC, VXLAN, GRE, WireGuard, ZeroTier) and MASQUERADEd there
    to that device's address.
  - The router IP and NAT IP follow CubeSandbox's rules. Without O(cidr) they are the last two usable
    addresses of O(sandbox_cidr) (IPv4, /16 to /24; C(192.168.0.0/18) gives router C(192.168.63.253/32) and
    NAT C(192.168.63.254)). With O(cidr) (IPv4, private, aligned, /16 to /30) the router is the network
    address + 1 and the NAT IP + 2, and the CIDR must not overlap any interface address or any host route on
    another link. The NAT IP must differ from the router IP and must not be a local address. A broken rule
    fails before anything is changed, with the rule's name in RV(rule).
  - Host state for O(state=present) - the device up with the router IP (C(rp_filter=2), C(accept_local=1)); a
    permanent neighbour entry and a /32 route for the NAT IP; C(net.ipv4.ip_forward=1); an own routing table
    (O(route_table)) and rules steering the sandbox sources into it (what the device hands back and the main
    table cannot route is refused, never steered again); a tc loop from the device's egress to its ingress; and the nftables table
    C(ip liteboxd_cube_router) with the FORWARD accepts, the SNAT to the NAT IP and the
    C(nat POSTROUTING -s <nat-ip> ! -o <device>) MASQUERADE (TCP and UDP to source ports O(snat_port_min)-65535,
    ICMP).
  - The device is a C(dummy) link where the kernel has that type; otherwise a C(veth) pair whose peer
    (the device name cut to 13 characters plus C(-p)) only gives the device its carrier. RV(device_kind) says which.
  - Everything is rendered into one script under O(state_dir) that the module runs and, with O(persist), an
    enabled systemd unit re-runs at boot. A changed spec removes the old state and applies the new one;
    O(state=absent) removes every trace (links, addresses, neighbours, routes, rules, nftables table, files,
    unit), restores routes that O(routes) replaced and turns forwarding off again if it was off before.
  - Enabling (or recreating) cube-router interrupts existing outbound connections of running sandboxes;
    the module says so in a warning. The host's default route is never touched unless O(routes) says so.
requirements:
  - netaddr
  - iproute2 (C(ip), C(tc)) and nftables (C(nft)) on the host
extends_documentation_fragment:
  - liteboxd.sandbox_network.attributes
  - liteboxd.sandbox_network.attributes.linux
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
options:
  state:
    description: Whether route-aware egress is configured (V(present)) or removed without a trace (V(absent)).
    type: str
    choices: [present, absent]
    default: present
  sandbox_cidr:
    description:
      - The sandbox network CIDR. Required with O(state=present).
      - Source of the router and NAT addresses when O(cidr) is not set; sandbox-to-sandbox traffic inside it
        is never steered.
    type: str
  cidr:
    description:
      - Custom cube-router CIDR (IPv4, private, aligned, /16 to /30). Router = network + 1, NAT = network + 2.
    type: str
  device:
    description: Name of the cube-router device.
    type: str
    default: cube-router
  snat_port_min:
    description:
      - Lowest source port of the final TCP and UDP MASQUERADE (up to 65535). The default is CubeSandbox's
        SNAT range, 30000-65535.
      - It must stay above O(port_mapping_ports), or the module fails before any change.
    type: int
    default: 30000
  port_mapping_ports:
    description:
      - The host ports port mappings use on this host, V(low-high) - CubeSandbox's network-agent publishes
        sandbox ports from C(host_port_min)-C(host_port_max) of its Cubelet config, 20000-29999 by default.
      - A MASQUERADE source port there could take the port of a published sandbox port, so O(snat_port_min)
        must be above this range. An empty string says nothing on this host maps ports and turns the check off.
    type: str
    default: 20000-29999
  sandbox_sources:
    description:
      - Where sandbox traffic enters the host - IPv4 CIDRs (matched by source address) and/or interface
        names (matched by incoming interface). Defaults to O(sandbox_cidr).
    type: list
    elements: str
  route_table:
    description: Number of the routing table that sends sandbox traffic into the device.
    type: int
    default: 3626
  rule_priority:
    description:
      - Priority of the rule that routes packets coming back from the device by the main table (1 to 32763).
        At the next priority, what the main table has no route for (a host without a default route) is
        refused (ICMP net unreachable) instead of being steered into the device again; the steering
        rules use the priority after that. Operator rules for sandbox traffic, including rules for what the
        device hands back, need a lower number.
    type: int
    default: 30100
  reply_mark:
    description:
      - Firewall mark bit set on replies of connections that did not start in a sandbox (published ports,
        in-cluster peers), so those replies keep the host's routing instead of entering cube-router.
        Pick a bit no other component on the host uses.
    type: int
    default: 268435456
  routes:
    description:
      - Host routes and policy-table routes for the egress path (for example the underlay peer pinned to the
        physical NIC and the default route through a tunnel). Applied with C(ip route replace); a host route
        they replace is restored when they are removed. Only these routes may change the default route.
    type: list
    elements: dict
    default: []
    suboptions:
      dst:
        description: Destination CIDR or V(default).
        type: str
        required: true
      via:
        description: Gateway address.
        type: str
      dev:
        description: Output device.
        type: str
      src:
        description: Preferred source address.
        type: str
      metric:
        description: Route metric (part of the route's identity).
        type: int
      table:
        description: Routing table number or V(main) (default).
        type: str
      type:
        description: Route type.
        type: str
        choices: [unicast, unreachable, blackhole, throw, prohibit]
        default: unicast
      onlink:
        description: Treat the gateway as directly reachable on O(routes[].dev).
        type: bool
        default: false
  rules:
    description: Policy routing rules for the egress path (C(ip rule add)).
    type: list
    elements: dict
    default: []
    suboptions:
      priority:
        description: Rule priority, 1 to 32765.
        type: int
        required: true
      from:
        description: Source CIDR.
        type: str
      to:
        description: Destination CIDR.
        type: str
      iif:
        description: Incoming interface.
        type: str
      oif:
        description: Outgoing interface.
        type: str
      table:
        description: Table number or V(main), V(local), V(default).
        type: str
        required: true
  tunnels:
    description: Tunnel devices the egress routes use, created before the routes.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Device name.
        type: str
        required: true
      kind:
        description: Tunnel type.
        type: str
        required: true
        choices: [vxlan, gre]
      local:
        description: Local underlay address (required for V(gre)).
        type: str
      remote:
        description: Remote underlay address.
        type: str
        required: true
      vni:
        description: VXLAN network identifier (V(vxlan) only).
        type: int
      dstport:
        description: VXLAN UDP port (V(vxlan) only).
        type: int
        default: 4789
      dev:
        description: Underlay device (V(vxlan) only).
        type: str
      ttl:
        description: Outer TTL (V(gre) only).
        type: int
        default: 255
      key:
        description: GRE key (V(gre) only).
        type: int
      address:
        description: Address of this end in CIDR form, for example V(169.254.100.1/30).
        type: str
      mtu:
        description: Device MTU (kernel default when unset).
        type: int
  persist:
    description: Install and enable a systemd unit that re-applies the rendered script at boot.
    type: bool
    default: true
  state_dir:
    description: Directory for the rendered script, nftables file and state record.
    type: path
    default: /etc/liteboxd/cube-router
  unit_dir:
    description: Directory of systemd system units.
    type: path
    default: /etc/systemd/system
notes:
  - Supports check mode (computes and reports everything without touching the host) and diff mode
    (device, addresses, neighbours, routes, rules, steering, sysctl, tunnels, firewall and files).
  - Port mapping stays on the primary NIC; inbound connections are not affected.
seealso:
  - name: Route-aware egress guide
    description: When to enable it, the address rules, the seed's two examples, verification.
    link: https://github.com/liteboxd/sandbox_network/blob/main/docs/route-aware-egress.md
"""

EXAMPLES = r"""
- name: Route-aware egress for the default CubeSandbox sandbox CIDR
  liteboxd.sandbox_network.cube_router:
    sandbox_cidr: 192.168.0.0/18

- name: Custom cube-router CIDR, sandbox traffic entering on a bridge
  liteboxd.sandbox_network.cube_router:
    sandbox_cidr: 192.168.0.0/18
    cidr: 10.254.0.0/24
    sandbox_sources: [cube-br0]

- name: Internet through a VXLAN remote gateway, private ranges and the underlay peer on eth0
  liteboxd.sandbox_network.cube_router:
    sandbox_cidr: 192.168.0.0/18
    tunnels:
      - {name: natvx, kind: vxlan, vni: 100, local: 203.0.113.10, remote: 198.51.100.20, dev: eth0,
         address: 169.254.100.1/30}
    routes:
      - {dst: 198.51.100.20/32, via: 203.0.113.1, dev: eth0, src: 203.0.113.10}
      - {dst: 10.0.0.0/8, via: 203.0.113.1, dev: eth0, src: 203.0.113.10}
      - {dst: 172.16.0.0/12, via: 203.0.113.1, dev: eth0, src: 203.0.113.10}
      - {dst: 192.168.0.0/16, via: 203.0.113.1, dev: eth0, src: 203.0.113.10}
      - {dst: default, dev: natvx}

- name: Remove every trace
  liteboxd.sandbox_network.cube_router:
    state: absent
"""

RETURN = r"""
router_ip:
  description: Router IP on the device.
  returned: state is present
  type: str
  sample: 192.168.63.253
router_cidr:
  description: The router IP with the prefix length it has on the device (always C(/32)).
  returned: state is present
  type: str
  sample: 192.168.63.253/32
nat_ip:
  description: Internal SNAT IP sandbox traffic is normalised to.
  returned: state is present
  type: str
  sample: 192.168.63.254
device:
  description: The cube-router device name.
  returned: always
  type: str
  sample: cube-router
device_kind:
  description: C(dummy), or C(veth) where the kernel has no dummy link type (predicted in check mode).
  returned: state is present
  type: str
  sample: veth
peer:
  description: The veth peer name when RV(device_kind) is C(veth).
  returned: state is present and device_kind is veth
  type: str
  sample: cube-router-p
changes:
  description: The parts of the host state that differ (or differed) from the wanted state.
  returned: always
  type: list
  elements: str
  sample: [device, firewall, routes, rules]
rule:
  description: The address rule that was broken (on failure only).
  returned: failed
  type: str
  sample: cidr_aligned
script:
  description: Path of the rendered script that applies the state (also run at boot with O(persist)).
  returned: always
  type: str
  sample: /etc/liteboxd/cube-router/apply.sh
"""

import json
import os
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.liteboxd.sandbox_network.plugins.module_utils import cube_router as cr
from ansible_collections.liteboxd.sandbox_network.plugins.module_utils.cube_router_addresses import (
    CubeRouterAddressError,
    derive_addresses,
)
from ansible_collections.liteboxd.sandbox_network.plugins.module_utils.cube_router_host import (
    HostReader,
    dummy_available,
    link_name,
)
from ansible_collections.liteboxd.sandbox_network.plugins.module_utils.routing import (
    DECLARABLE_ROUTE_TYPES,
    SpecError,
    atomic_write,
    netaddr,
    read_file,
    remove_file,
)

STATE_FILE = "state.json"
APPLY = "apply.sh"
TEARDOWN = "teardown.sh"
NFT = "cube-router.nft"


class CubeRouter(object):
    def __init__(self, module):
        self.module = module
        params = module.params
        self.paths = dict((name, os.path.join(params["state_dir"], name)) for name in (STATE_FILE, APPLY, TEARDOWN, NFT))
        self.unit = os.path.join(params["unit_dir"], cr.UNIT_NAME)
        self.wants = os.path.join(params["unit_dir"], "multi-user.target.wants", cr.UNIT_NAME)
        record = read_file(self.paths[STATE_FILE])
        self.previous = json.loads(record) if record else None
        self.reader = HostReader(module.run_command)

    def run_script(self, path, cleanup=None):
        """Run a rendered script; on failure run ``cleanup`` (a teardown script text) and remove the
        files (the teardown already ran, so no record may claim otherwise), then fail."""
        rc, out, err = self.module.run_command(["/bin/sh", path])
        if rc != 0:
            msg = "%s failed (rc=%d): %s" % (path, rc, err.strip() or out.strip())
            if cleanup is not None:
                self.run_script_text(cleanup)
                self.remove_files()
                msg += "; what it had applied was removed again"
            self.module.fail_json(msg=msg, rc=rc, stdout=out, stderr=err)

    def remove_files(self):
        for path in list(self.paths.values()) + [self.unit, self.wants]:
            remove_file(path)
        state_dir = self.module.params["state_dir"]
        if os.path.isdir(state_dir) and not os.listdir(state_dir):
            os.rmdir(state_dir)
        self.systemd_reload()

    def files_state(self, wanted):
        """{path: sha256 or None} of the rendered files and the unit's enablement link."""
        state = {}
        for path in wanted:
            text = read_file(path)
            state[path] = cr.sha256(text) if text is not None else None
        state[self.wants] = os.path.realpath(self.wants) if os.path.lexists(self.wants) else None
        return state

    def systemd_reload(self):
        if os.path.isdir("/run/systemd/system"):
            self.module.run_command(["systemctl", "daemon-reload"])

    # ----- present -----

    def addresses(self, params):
        main_routes = [cr.route_record(r) for r in self.reader.routes if r.table == cr.MAIN_TABLE]
        try:
            return derive_addresses(params["sandbox_cidr"], cidr=params["cidr"], device=params["device"],
                                    interface_addresses=self.reader.addresses, routes=main_routes)
        except CubeRouterAddressError as exc:
            self.module.fail_json(msg=str(exc), rule=exc.rule, changes=[])
        except SpecError as exc:
            self.module.fail_json(msg=str(exc), changes=[])

    def present(self):
        module, params = self.module, self.module.params
        addresses = self.addresses(params)
        try:
            spec = cr.build_spec(params, addresses)
        except SpecError as exc:
            module.fail_json(msg=str(exc), changes=[])
        previous = self.previous["spec"] if self.previous else None
        existing_kind = self.reader.device_kind(spec["device"])
        if existing_kind is not None and (previous is None or previous["device"] != spec["device"]):
            ours = existing_kind in ("dummy", "veth") and all(
                a["address"] == spec["router_cidr"] for a in self.reader.addresses if a["dev"] == spec["device"])
            if not ours:
                module.fail_json(msg="device: %s already exists as a %s link that this module did not create"
                                 % (spec["device"], existing_kind), changes=[])
        created = set([spec["device"], spec["peer"]] + [t["name"] for t in spec["tunnels"]])
        known = set(link_name(link) for link in self.reader.links) | created
        for option, items in (("routes", spec["routes"]), ("tunnels", spec["tunnels"])):
            for index, item in enumerate(items):
                if item.get("dev") and item["dev"] not in known:
                    module.fail_json(msg="%s[%d].dev: device %s does not exist" % (option, index, item["dev"]),
                                     changes=[])
        if existing_kind in ("dummy", "veth"):
            kind = existing_kind
        else:
            kind = "dummy" if dummy_available() else "veth"

        wanted = cr.wanted_state(spec, kind)
        specs = [spec] + ([previous] if previous and previous != spec else [])
        before = self.reader.state(specs)
        firewall_current = bool(
            self.previous and previous == spec and self.previous.get("firewall_sha") == cr.sha256(wanted["firewall"])
            and self.previous.get("firewall_json") == self.reader.nft_json())
        after = dict(wanted)
        if firewall_current:
            after["firewall"] = before["firewall"]
        forwarding_before = self.previous["forwarding_before"] if self.previous else self.reader.forwarding()
        # Host routes the operator routes replaced: those still replaced are carried over (a previous
        # teardown restores the others), newly replaced ones are read from the host.
        keys = set(r.key for r in cr.operator_routes(spec))
        replaced = dict((cr.route_text(cr.record_route(r)), r) for r in (self.previous or {}).get("replaced_routes", [])
                        if cr.record_route(r).key in keys)
        replaced.update((cr.route_text(cr.record_route(r)), r) for r in self.reader.replaced_routes(
            spec, previous["routes"] if previous else []))
        replaced = [replaced[text] for text in sorted(replaced)]
        files = {
            self.paths[NFT]: cr.render_nft(spec),
            self.paths[APPLY]: cr.render_apply(spec, self.paths[NFT]),
            self.paths[TEARDOWN]: cr.render_teardown(spec, replaced, forwarding_before),
        }
        if params["persist"]:
            files[self.unit] = cr.render_unit(self.paths[APPLY], self.paths[TEARDOWN])
        before["files"] = self.files_state(list(files) + [self.unit])
        after["files"] = dict((path, cr.sha256(text)) for path, text in files.items())
        after["files"][self.wants] = self.unit if params["persist"] else None
        for path in set(before["files"]) - set(after["files"]):
            after["files"][path] = None
        changes = cr.changed_sections(before, after)
        if previous and previous != spec and "spec" not in changes:
            changes.append("spec")
        host_changes = [c for c in changes if c != "files"]
        result = dict(changed=bool(changes), changes=changes, device=spec["device"], device_kind=kind,
                      router_ip=spec["router_ip"], nat_ip=spec["nat_ip"], router_cidr=spec["router_cidr"],
                      script=self.paths[APPLY])
        if host_changes:
            module.warn(cr.FIRST_ENABLEMENT_WARNING)
        if module.check_mode or not changes:
            return self.finish(result, kind, spec, before, after)

        if host_changes:
            if previous and previous != spec:
                self.run_script_text(cr.render_teardown(previous, self.previous.get("replaced_routes", []), None))
        for path, text in files.items():
            atomic_write(module, path, text, 0o755 if path.endswith(".sh") else 0o644)
        if host_changes:
            self.run_script(self.paths[APPLY], cleanup=files[self.paths[TEARDOWN]])
        if params["persist"]:
            if not os.path.lexists(self.wants):
                os.makedirs(os.path.dirname(self.wants), exist_ok=True)
                os.symlink(self.unit, self.wants)
        else:
            remove_file(self.unit)
            remove_file(self.wants)
        self.systemd_reload()
        self.reader = HostReader(module.run_command)
        kind = self.reader.device_kind(spec["device"])
        record = dict(spec=spec, replaced_routes=replaced, forwarding_before=forwarding_before, device_kind=kind,
                      firewall_sha=cr.sha256(wanted["firewall"]), firewall_json=self.reader.nft_json())
        atomic_write(module, self.paths[STATE_FILE], json.dumps(record, indent=2, sort_keys=True) + "\n", 0o600)
        return self.finish(result, kind, spec, before, after)

    def run_script_text(self, text):
        path = os.path.join(self.module.tmpdir, "cube-router-teardown.sh")
        atomic_write(self.module, path, text, 0o700)
        self.run_script(path)

    def finish(self, result, kind, spec, before, after):
        result["device_kind"] = kind
        if kind == "veth":
            result["peer"] = spec["peer"]
        if self.module._diff:
            result["diff"] = dict(before=before, after=after)
        self.module.exit_json(**result)

    # ----- absent -----

    def absent(self):
        module, params = self.module, self.module.params
        if self.previous:
            spec, replaced = self.previous["spec"], self.previous.get("replaced_routes", [])
            forwarding_before = self.previous.get("forwarding_before")
        else:
            # Nothing recorded: remove what the names in the parameters identify.
            spec = {"device": params["device"], "peer": cr.peer_name(params["device"]), "routes": [], "rules": [],
                    "tunnels": [], "source_cidrs": [], "source_interfaces": [], "nat_ip": None,
                    "sandbox_cidr": None, "route_table": params["route_table"],
                    "rule_priority": params["rule_priority"], "reply_mark": params["reply_mark"]}
            replaced, forwarding_before = [], None
            if self.reader.device_kind(spec["device"]) not in (None, "dummy", "veth"):
                module.fail_json(msg="device: %s is a %s link that this module did not create"
                                 % (spec["device"], self.reader.device_kind(spec["device"])), changes=[])
        before = self.reader.state([spec])
        paths = list(self.paths.values()) + [self.unit]
        before["files"] = dict((p, cr.sha256(read_file(p))) for p in paths if read_file(p) is not None)
        if os.path.lexists(self.wants):
            before["files"][self.wants] = os.path.realpath(self.wants)
        after = cr.empty_state()
        after["files"] = {}
        forwarding = self.reader.forwarding()
        if forwarding is not None:
            after["sysctl"] = {"net.ipv4.ip_forward": "0" if forwarding_before == "0" else forwarding}
        changes = cr.changed_sections(before, after)
        result = dict(changed=bool(changes), changes=changes, device=spec["device"], script=self.paths[APPLY])
        if changes and not module.check_mode:
            self.run_script_text(cr.render_teardown(spec, replaced, forwarding_before))
            self.remove_files()
        if module._diff:
            result["diff"] = dict(before=before, after=after)
        module.exit_json(**result)


def argument_spec():
    route_spec = dict(
        dst=dict(type="str", required=True), via=dict(type="str"), dev=dict(type="str"), src=dict(type="str"),
        metric=dict(type="int"), table=dict(type="str"),
        type=dict(type="str", default="unicast", choices=list(DECLARABLE_ROUTE_TYPES)),
        onlink=dict(type="bool", default=False))
    rule_spec = {"priority": dict(type="int", required=True), "from": dict(type="str"), "to": dict(type="str"),
                 "iif": dict(type="str"), "oif": dict(type="str"), "table": dict(type="str", required=True)}
    tunnel_spec = dict(
        name=dict(type="str", required=True), kind=dict(type="str", required=True, choices=["vxlan", "gre"]),
        local=dict(type="str"), remote=dict(type="str", required=True), vni=dict(type="int"),
        dstport=dict(type="int", default=4789), dev=dict(type="str"), ttl=dict(type="int", default=255),
        key=dict(type="int", no_log=False), address=dict(type="str"), mtu=dict(type="int"))
    return dict(
        state=dict(type="str", default="present", choices=["present", "absent"]),
        sandbox_cidr=dict(type="str"),
        cidr=dict(type="str"),
        device=dict(type="str", default="cube-router"),
        snat_port_min=dict(type="int", default=cr.SNAT_PORT_MIN),
        port_mapping_ports=dict(type="str", default=cr.PORT_MAPPING_PORTS),
        sandbox_sources=dict(type="list", elements="str"),
        route_table=dict(type="int", default=3626),
        rule_priority=dict(type="int", default=30100),
        reply_mark=dict(type="int", default=0x10000000),
        routes=dict(type="list", elements="dict", default=[], options=route_spec),
        rules=dict(type="list", elements="dict", default=[], options=rule_spec),
        tunnels=dict(type="list", elements="dict", default=[], options=tunnel_spec),
        persist=dict(type="bool", default=True),
        state_dir=dict(type="path", default="/etc/liteboxd/cube-router"),
        unit_dir=dict(type="path", default="/etc/systemd/system"),
    )


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        required_if=[("state", "present", ["sandbox_cidr"])],
        supports_check_mode=True,
    )
    if netaddr is None:
        module.fail_json(msg=missing_required_lib("netaddr"))
    try:
        router = CubeRouter(module)
        if module.params["state"] == "present":
            router.present()
        else:
            router.absent()
    except (OSError, ValueError) as exc:
        module.fail_json(msg="cube_router: %s" % exc, exception=traceback.format_exc())


if __name__ == "__main__":
    main()
