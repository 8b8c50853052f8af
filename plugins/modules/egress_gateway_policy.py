#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, LiteBoxd platform team
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: egress_gateway_policy
short_description: Cilium egress gateway policy that sends sandbox egress out through the egress node
version_added: 0.1.0
description:
  - Ensures the cluster-scoped C(CiliumEgressGatewayPolicy) (default name C(liteboxd-sandbox-egress-via-node)).
    It selects every sandbox Pod (C(liteboxd.io/sandbox=true), or C(app=liteboxd) with O(profile=liteboxd)) in
    the sandbox namespace and sends their
    traffic to O(destination_cidrs) (minus O(excluded_cidrs)) through the egress node, SNATed to O(egress_ip).
    The network policies decide what may leave, the internet or a sandbox's allowed domains; all of it
    leaves through the egress node. A sandbox without internet access sends nothing the policy applies to.
    O(egress_ip) is the egress node's ZeroTier address, which the node's policy routing sends through the tunnel.
  - Cilium takes the SNAT address either from O(egress_ip) or from the first IPv4 address of O(interface).
    Cilium ignores a policy whose gateway names both, so its sandboxes would leave from their own node. The
    module refuses both together, and an O(excluded_cidrs) entry outside every O(destination_cidrs) entry,
    which Cilium would ignore too, before any request.
  - Several O(egress_gateways) fill Cilium's C(egressGateways) list, the multi-gateway form of the policy.
    A Cilium whose CRD lacks that field would silently drop it, so the module then fails and says so.
    It never reports a policy the cluster would not enforce as written.
  - An object changed by hand is put back. O(state=absent) deletes the policy. Sandboxes with internet access
    then leave through their own node again, as the seed's rollback describes.
  - Cilium's datapath applies the policy. Here the API server validates and stores it.
requirements:
  - netaddr (address and CIDR checks)
author:
  - LiteBoxd platform team (@liteboxd)
extends_documentation_fragment:
  - liteboxd.sandbox_network.attributes
  - liteboxd.sandbox_network.attributes.kubernetes
  - liteboxd.sandbox_network.k8s_auth
attributes:
  check_mode:
    support: full
    details: Writes are sent with server-side dry run, so the API server validates them and stores nothing.
  diff_mode:
    support: full
options:
  state:
    description: Whether the policy exists.
    type: str
    choices: [present, absent]
    default: present
  name:
    description: Name of the cluster-scoped policy.
    type: str
    default: liteboxd-sandbox-egress-via-node
  sandbox_namespace:
    description: Namespace of the sandbox pods the policy selects.
    type: str
    default: liteboxd-sandbox
  profile:
    description:
      - Which Pods are sandboxes. V(default) selects C(liteboxd.io/sandbox=true), the Pods of
        M(liteboxd.sandbox_network.sandbox).
      - V(liteboxd) selects C(app=liteboxd), the Pods LiteBoxd's server creates (C(sandbox-<id>), labelled
        C(app=liteboxd) and C(sandbox-id=<id>)).
    type: str
    choices: [default, liteboxd]
    default: default
  egress_ip:
    description:
      - IPv4 address the sandbox traffic is SNATed to on the egress node (the node's ZeroTier address).
      - With O(state=present) one of O(egress_ip) and O(interface) is required unless O(egress_gateways) is given.
        They are mutually exclusive.
    type: str
  node_selector:
    description: Labels that pick the egress node for O(egress_ip).
    type: dict
    default: {liteboxd.io/role: egress}
  interface:
    description:
      - Interface on the egress node whose first IPv4 address Cilium uses instead of O(egress_ip)
        (the ZeroTier device). Mutually exclusive with O(egress_ip) and O(egress_gateways).
    type: str
  egress_gateways:
    description:
      - Several egress nodes, for redundancy (Cilium's C(egressGateways) form). Mutually exclusive with O(egress_ip).
      - Each entry names its node with O(egress_gateways[].node_selector), usually C(kubernetes.io/hostname).
    type: list
    elements: dict
    suboptions:
      egress_ip:
        description: IPv4 SNAT address on that node. Give it or O(egress_gateways[].interface), not both.
        type: str
      node_selector:
        description: Labels that pick the node.
        type: dict
        required: true
      interface:
        description: Interface on the node whose first IPv4 address is the SNAT address, instead of O(egress_gateways[].egress_ip).
        type: str
  destination_cidrs:
    description: Destinations sent through the egress gateway.
    type: list
    elements: str
    default: [0.0.0.0/0]
  excluded_cidrs:
    description:
      - Destinations left out (cluster and private networks stay direct).
      - Each must overlap an entry of O(destination_cidrs); Cilium ignores one that does not.
    type: list
    elements: str
    default: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10, 169.254.0.0/16]
"""

EXAMPLES = r"""
- name: What sandboxes may send out leaves through the egress node's ZeroTier address
  liteboxd.sandbox_network.egress_gateway_policy:
    kubeconfig: /etc/liteboxd/kubeconfig
    egress_ip: 10.147.17.5

- name: Two egress nodes
  liteboxd.sandbox_network.egress_gateway_policy:
    egress_gateways:
      - {node_selector: {kubernetes.io/hostname: egress-a}, egress_ip: 10.147.17.5}
      - {node_selector: {kubernetes.io/hostname: egress-b}, egress_ip: 10.147.17.6}

- name: The SNAT address is the first IPv4 address of the ZeroTier device (instead of egress_ip)
  liteboxd.sandbox_network.egress_gateway_policy:
    interface: ztabcdef12

- name: Rollback, sandboxes leave through their own node again
  liteboxd.sandbox_network.egress_gateway_policy:
    state: absent
"""

RETURN = r"""
policy:
  description: The policy as the API server stored it (or would store it, in check mode); null when absent.
  returned: always
  type: dict
  sample:
    apiVersion: cilium.io/v2
    kind: CiliumEgressGatewayPolicy
    metadata: {name: liteboxd-sandbox-egress-via-node}
    spec:
      selectors:
        - podSelector: {matchLabels: {liteboxd.io/sandbox: "true", io.kubernetes.pod.namespace: liteboxd-sandbox}}
      destinationCIDRs: [0.0.0.0/0]
      excludedCIDRs: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10, 169.254.0.0/16]
      egressGateway: {nodeSelector: {matchLabels: {liteboxd.io/role: egress}}, egressIP: 10.147.17.5}
action:
  description: V(created), V(replaced), V(patched), V(unchanged), V(deleted) or V(absent).
  returned: always
  type: str
  sample: unchanged
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.liteboxd.sandbox_network.plugins.module_utils import k8s
from ansible_collections.liteboxd.sandbox_network.plugins.module_utils import sandbox_manifests as manifests


def argument_spec():
    spec = dict(
        state=dict(type="str", choices=["present", "absent"], default="present"),
        name=dict(type="str", default=manifests.EGRESS_GATEWAY_POLICY_NAME),
        sandbox_namespace=dict(type="str", default=manifests.DEFAULT_NAMESPACE),
        profile=dict(type="str", choices=sorted(manifests.PROFILES), default="default"),
        egress_ip=dict(type="str"),
        node_selector=dict(type="dict", default={manifests.EGRESS_NODE_LABEL: "egress"}),
        interface=dict(type="str"),
        egress_gateways=dict(type="list", elements="dict", options=dict(
            egress_ip=dict(type="str"),
            node_selector=dict(type="dict", required=True),
            interface=dict(type="str"),
        )),
        destination_cidrs=dict(type="list", elements="str", default=["0.0.0.0/0"]),
        excluded_cidrs=dict(type="list", elements="str", default=list(manifests.PRIVATE_CIDRS)),
    )
    spec.update(k8s.AUTH_ARG_SPEC)
    return spec


def gateway_entry(entry, option):
    """One gateway node (``option`` names it in messages): its selector and exactly one of egress IP
    and interface."""
    field, subject = (option + ".", option + ": ") if option else ("", "")
    if not entry["node_selector"]:
        raise manifests.ManifestError("%snode_selector: name at least one node label" % field)
    if entry["egress_ip"] and entry["interface"]:
        raise manifests.ManifestError(
            "%segress_ip and interface: give one of them, not both: Cilium ignores an egress gateway policy whose "
            "gateway sets both egressIP and interface, and its sandboxes would leave from their own node" % subject)
    if not (entry["egress_ip"] or entry["interface"]):
        raise manifests.ManifestError(
            "%segress_ip or interface is required with state=present (the egress node's ZeroTier address, or its "
            "ZeroTier device)%s" % (subject, "" if option else ", or give egress_gateways"))
    return {"egress_ip": manifests.check_ipv4(entry["egress_ip"], field + "egress_ip") if entry["egress_ip"] else None,
            "node_selector": manifests.check_labels(entry["node_selector"], field + "node_selector"),
            "interface": entry["interface"]}


def desired_policy(params):
    """The policy for the options; raises ManifestError naming the bad option."""
    p = params
    manifests.check_name(p["sandbox_namespace"], "sandbox_namespace")
    if p["egress_gateways"]:
        gateways = [gateway_entry(entry, "egress_gateways[%d]" % index)
                    for index, entry in enumerate(p["egress_gateways"])]
    else:
        gateways = [gateway_entry(p, "")]
    if not p["destination_cidrs"]:
        raise manifests.ManifestError("destination_cidrs: name at least one destination CIDR")
    destinations = manifests.check_cidrs(p["destination_cidrs"], "destination_cidrs")
    return manifests.egress_gateway_policy(
        gateways, name=p["name"], namespace=p["sandbox_namespace"], destination_cidrs=destinations,
        excluded_cidrs=manifests.check_excluded_cidrs(p["excluded_cidrs"], destinations, "excluded_cidrs"),
        profile=manifests.PROFILES[p["profile"]])


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True,
                           mutually_exclusive=[("egress_ip", "egress_gateways"), ("interface", "egress_gateways")])
    desired = None
    try:
        if module.params["state"] == "present":
            desired = desired_policy(module.params)
    except manifests.ManifestError as exc:
        module.fail_json(msg=str(exc))
    client = k8s.client_from_module(module)
    try:
        if desired:
            result = k8s.ensure_object(client, desired, module.check_mode)
        else:
            result = k8s.remove_object(client, k8s.CILIUM_EGRESS_GATEWAY_POLICY, module.params["name"], None,
                                       module.check_mode)
    except k8s.K8sError as exc:
        module.fail_json(msg=str(exc))
    output = dict(changed=result["changed"], action=result["action"], policy=k8s.for_diff(result["after"]) or None)
    if module._diff:
        output["diff"] = result["diff"]
    module.exit_json(**output)


if __name__ == "__main__":
    main()
