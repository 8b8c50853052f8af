#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, LiteBoxd platform team
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: egress_gateway_policy
short_description: Cilium egress gateway policy that sends internet-enabled sandboxes out through the egress node
version_added: 0.1.0
description:
  - Ensures the cluster-scoped C(CiliumEgressGatewayPolicy) (default name C(liteboxd-sandbox-egress-via-node)).
    It selects the pods labelled C(liteboxd.io/internet-access=true) in the sandbox namespace and sends their
    traffic to O(destination_cidrs) (minus O(excluded_cidrs)) through the egress node, SNATed to O(egress_ip).
    O(egress_ip) is the egress node's ZeroTier address, which the node's policy routing sends through the tunnel.
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
  egress_ip:
    description:
      - IPv4 address the sandbox traffic is SNATed to on the egress node (the node's ZeroTier address).
      - Required with O(state=present) unless O(egress_gateways) is given.
    type: str
  node_selector:
    description: Labels that pick the egress node for O(egress_ip).
    type: dict
    default: {liteboxd.io/role: egress}
  interface:
    description: Interface on the egress node whose address is used, as an alternative hint to Cilium.
    type: str
  egress_gateways:
    description:
      - Several egress nodes, for redundancy (Cilium's C(egressGateways) form). Mutually exclusive with O(egress_ip).
      - Each entry names its node with O(egress_gateways[].node_selector), usually C(kubernetes.io/hostname).
    type: list
    elements: dict
    suboptions:
      egress_ip:
        description: IPv4 SNAT address on that node.
        type: str
        required: true
      node_selector:
        description: Labels that pick the node.
        type: dict
        required: true
      interface:
        description: Interface on the node.
        type: str
  destination_cidrs:
    description: Destinations sent through the egress gateway.
    type: list
    elements: str
    default: [0.0.0.0/0]
  excluded_cidrs:
    description: Destinations left out (cluster and private networks stay direct).
    type: list
    elements: str
    default: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10, 169.254.0.0/16]
"""

EXAMPLES = r"""
- name: Internet-enabled sandboxes leave through the egress node's ZeroTier address
  liteboxd.sandbox_network.egress_gateway_policy:
    kubeconfig: /etc/liteboxd/kubeconfig
    egress_ip: 10.147.17.5

- name: Two egress nodes
  liteboxd.sandbox_network.egress_gateway_policy:
    egress_gateways:
      - {node_selector: {kubernetes.io/hostname: egress-a}, egress_ip: 10.147.17.5}
      - {node_selector: {kubernetes.io/hostname: egress-b}, egress_ip: 10.147.17.6}

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
        - podSelector: {matchLabels: {liteboxd.io/internet-access: "true", io.kubernetes.pod.namespace: liteboxd-sandbox}}
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
        egress_ip=dict(type="str"),
        node_selector=dict(type="dict", default={manifests.EGRESS_NODE_LABEL: "egress"}),
        interface=dict(type="str"),
        egress_gateways=dict(type="list", elements="dict", options=dict(
            egress_ip=dict(type="str", required=True),
            node_selector=dict(type="dict", required=True),
            interface=dict(type="str"),
        )),
        destination_cidrs=dict(type="list", elements="str", default=["0.0.0.0/0"]),
        excluded_cidrs=dict(type="list", elements="str", default=list(manifests.PRIVATE_CIDRS)),
    )
    spec.update(k8s.AUTH_ARG_SPEC)
    return spec


def desired_policy(params):
    """The policy for the options; raises ManifestError naming the bad option."""
    p = params
    manifests.check_name(p["sandbox_namespace"], "sandbox_namespace")
    if p["egress_gateways"]:
        gateways = []
        for index, entry in enumerate(p["egress_gateways"]):
            option = "egress_gateways[%d]" % index
            if not entry["node_selector"]:
                raise manifests.ManifestError("%s.node_selector: name at least one node label" % option)
            gateways.append({"egress_ip": manifests.check_ipv4(entry["egress_ip"], option + ".egress_ip"),
                             "node_selector": manifests.check_labels(entry["node_selector"], option + ".node_selector"),
                             "interface": entry["interface"]})
    elif p["egress_ip"]:
        if not p["node_selector"]:
            raise manifests.ManifestError("node_selector: name at least one node label")
        gateways = [{"egress_ip": manifests.check_ipv4(p["egress_ip"], "egress_ip"),
                     "node_selector": manifests.check_labels(p["node_selector"], "node_selector"),
                     "interface": p["interface"]}]
    else:
        raise manifests.ManifestError("egress_ip: required with state=present (the egress node's ZeroTier address), "
                                      "or give egress_gateways")
    if not p["destination_cidrs"]:
        raise manifests.ManifestError("destination_cidrs: name at least one destination CIDR")
    return manifests.egress_gateway_policy(
        gateways, name=p["name"], namespace=p["sandbox_namespace"],
        destination_cidrs=manifests.check_cidrs(p["destination_cidrs"], "destination_cidrs"),
        excluded_cidrs=manifests.check_cidrs(p["excluded_cidrs"], "excluded_cidrs"))


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True,
                           mutually_exclusive=[("egress_ip", "egress_gateways")])
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
