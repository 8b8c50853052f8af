#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, LiteBoxd platform team
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: sandbox_network_policies
short_description: Base and internet network policy sets of the LiteBoxd sandbox namespace
version_added: 0.1.0
description:
  - Ensures the B(base set) in the sandbox namespace. C(default-deny-all) (NetworkPolicy) denies all ingress and
    egress. C(allow-dns) (CiliumNetworkPolicy) allows DNS to kube-dns only, through Cilium's DNS proxy
    (C(rules.dns matchPattern "*")) so that C(toFQDNs) policies learn names. C(deny-k8s-api)
    (CiliumNetworkPolicy, C(egressDeny)) blocks the Kubernetes API, the nodes, link-local/cloud metadata
    and the private ranges. C(allow-gateway-ingress) (NetworkPolicy, gateway pods) and/or
    C(allow-gateway-ingress-from-hosts) (CiliumNetworkPolicy, entities C(host) and C(remote-node)) admit
    the gateway only.
  - Ensures the B(internet set) C(allow-internet-egress) (NetworkPolicy). Pods labelled
    C(liteboxd.io/internet-access=true) reach any public IPv4 address on every port and protocol
    (C(ipBlock 0.0.0.0/0) except the private ranges, no port list).
  - Kubernetes NetworkPolicy is used where it can express the rule, Cilium policies where it cannot.
  - Every object carries C(app.kubernetes.io/managed-by=liteboxd.sandbox_network) and
    C(liteboxd.io/policy-set=base|internet). Objects of those sets that are no longer wanted are deleted,
    and an object changed by hand is put back. O(state=absent) deletes exactly the objects with those labels.
  - Per-sandbox domain allow-lists (C(toFQDNs), label C(liteboxd.io/policy-set=domains)) belong to the
    sandbox they serve. M(liteboxd.sandbox_network.sandbox) creates, changes and deletes them with the
    sandbox, and this module leaves them alone.
  - The policies are enforced by Cilium's datapath on the nodes. This module makes the API server store
    them (validated by its schemas). Check the datapath with C(cilium policy get) or Hubble on a cluster.
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
    description:
      - V(present) ensures the sets; V(absent) deletes every object of the base and internet sets this
        collection owns (found by label). The namespace itself is never deleted.
    type: str
    choices: [present, absent]
    default: present
  namespace:
    description: The sandbox namespace.
    type: str
    default: liteboxd-sandbox
  create_namespace:
    description:
      - Create the namespace when it does not exist (labelled C(app.kubernetes.io/managed-by)).
        An existing namespace is not changed.
    type: bool
    default: true
  internet_set:
    description:
      - Whether the internet set exists. V(false) deletes it, so no sandbox reaches the internet
        whatever its label says.
    type: bool
    default: true
  gateway_sources:
    description:
      - Where the gateway connects from. V(cluster) means in-cluster gateway pods (O(gateway_namespace),
        O(gateway_pod_labels)). V(host) means the cluster's nodes (Cilium entities C(host) and C(remote-node)),
        for a gateway running as a host service.
      - At least one source is needed.
    type: list
    elements: str
    choices: [cluster, host]
    default: [cluster, host]
  gateway_namespace:
    description:
      - Namespace of the in-cluster gateway pods (matched by its C(kubernetes.io/metadata.name) label).
    type: str
    default: liteboxd
  gateway_pod_labels:
    description: Labels of the in-cluster gateway pods.
    type: dict
    default: {app: liteboxd-gateway}
  gateway_ports:
    description:
      - TCP ports of the sandboxes the gateway may connect to. An empty list allows every port.
      - Single ports only. Port ranges are refused because an older API server silently drops C(endPort).
    type: list
    elements: int
    default: []
  dns_namespace:
    description: Namespace of the cluster DNS pods.
    type: str
    default: kube-system
  dns_pod_labels:
    description: Labels of the cluster DNS pods.
    type: dict
    default: {k8s-app: kube-dns}
  private_cidrs:
    description:
      - Destinations sandboxes never reach directly. They are denied in C(deny-k8s-api) and excepted from
        the internet set.
      - Defaults to RFC 1918, the shared address space 100.64.0.0/10 and link-local 169.254.0.0/16 (cloud metadata).
    type: list
    elements: str
    default: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10, 169.254.0.0/16]
"""

EXAMPLES = r"""
- name: Sandbox namespace policies, gateway on the hosts, sandbox ports 3000 and 8080 only
  liteboxd.sandbox_network.sandbox_network_policies:
    kubeconfig: /etc/liteboxd/kubeconfig
    gateway_sources: [host]
    gateway_ports: [3000, 8080]

- name: Every Kubernetes module of the collection shares one connection block
  module_defaults:
    group/liteboxd.sandbox_network.k8s:
      host: https://10.0.0.1:6443
      api_key: "{{ vault_k8s_token }}"
      ca_cert: /etc/liteboxd/ca.crt
  block:
    - name: Policies
      liteboxd.sandbox_network.sandbox_network_policies:
        namespace: liteboxd-sandbox

    - name: Egress gateway
      liteboxd.sandbox_network.egress_gateway_policy:
        egress_ip: 10.147.17.5

- name: Roll back
  liteboxd.sandbox_network.sandbox_network_policies:
    state: absent
"""

RETURN = r"""
policies:
  description: What happened to each object of the base and internet sets.
  returned: always
  type: list
  elements: dict
  contains:
    kind:
      description: Object kind.
      type: str
      sample: CiliumNetworkPolicy
    name:
      description: Object name.
      type: str
      sample: allow-dns
    namespace:
      description: Object namespace.
      type: str
      sample: liteboxd-sandbox
    action:
      description: V(created), V(replaced) (spec put back), V(patched) (labels), V(unchanged), V(deleted) or V(absent).
      type: str
      sample: unchanged
  sample:
    - {kind: NetworkPolicy, name: default-deny-all, namespace: liteboxd-sandbox, action: unchanged}
diff:
  description: Before and after of every changed object (with O(ignore:--diff)).
  returned: when diff mode is on
  type: list
  elements: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.liteboxd.sandbox_network.plugins.module_utils import k8s
from ansible_collections.liteboxd.sandbox_network.plugins.module_utils import sandbox_manifests as manifests

OWNED_SETS = ("base", "internet")
KINDS = (k8s.NETWORK_POLICY, k8s.CILIUM_NETWORK_POLICY)


def argument_spec():
    spec = dict(
        state=dict(type="str", choices=["present", "absent"], default="present"),
        namespace=dict(type="str", default=manifests.DEFAULT_NAMESPACE),
        create_namespace=dict(type="bool", default=True),
        internet_set=dict(type="bool", default=True),
        gateway_sources=dict(type="list", elements="str", choices=list(manifests.GATEWAY_SOURCES),
                             default=list(manifests.GATEWAY_SOURCES)),
        gateway_namespace=dict(type="str", default=manifests.DEFAULT_GATEWAY_NAMESPACE),
        gateway_pod_labels=dict(type="dict", default=dict(manifests.DEFAULT_GATEWAY_POD_LABELS)),
        gateway_ports=dict(type="list", elements="int", default=[]),
        dns_namespace=dict(type="str", default=manifests.DEFAULT_DNS_NAMESPACE),
        dns_pod_labels=dict(type="dict", default=dict(manifests.DEFAULT_DNS_POD_LABELS)),
        private_cidrs=dict(type="list", elements="str", default=list(manifests.PRIVATE_CIDRS)),
    )
    spec.update(k8s.AUTH_ARG_SPEC)
    return spec


def desired_policies(params):
    """The objects of the wanted sets; raises ManifestError naming the bad option."""
    p = params
    manifests.check_name(p["namespace"], "namespace")
    manifests.check_name(p["gateway_namespace"], "gateway_namespace")
    manifests.check_name(p["dns_namespace"], "dns_namespace")
    if not p["gateway_sources"]:
        raise manifests.ManifestError("gateway_sources: name at least one of cluster, host "
                                      "(without a source no gateway can reach the sandboxes)")
    private = manifests.check_cidrs(p["private_cidrs"], "private_cidrs", version=4)
    policies = manifests.base_policies(
        namespace=p["namespace"], gateway_sources=p["gateway_sources"], gateway_namespace=p["gateway_namespace"],
        gateway_pod_labels=manifests.check_labels(p["gateway_pod_labels"], "gateway_pod_labels"),
        gateway_ports=manifests.check_ports(p["gateway_ports"], "gateway_ports"),
        dns_namespace=p["dns_namespace"], dns_pod_labels=manifests.check_labels(p["dns_pod_labels"], "dns_pod_labels"),
        private_cidrs=private)
    if p["internet_set"]:
        policies.extend(manifests.internet_policies(namespace=p["namespace"], private_cidrs=private))
    return policies


def owned_objects(client, namespace):
    """{(kind, name): object} of every base/internet object this collection owns in the namespace."""
    found = {}
    for resource in KINDS:
        for obj in client.list(resource, namespace, label_selector=manifests.owned_selector(OWNED_SETS)):
            found[(resource.kind, obj["metadata"]["name"])] = obj
    return found


def namespace_manifest(namespace):
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": namespace, "labels": {manifests.MANAGED_BY_LABEL: manifests.MANAGED_BY}}}


def planned_creation(manifest):
    """Check mode in a namespace that does not exist yet: nothing can be dry-run inside it."""
    resource = k8s.resource_for(manifest)
    meta = manifest["metadata"]
    return {"changed": True, "action": "created", "kind": resource.kind, "name": meta["name"],
            "namespace": meta.get("namespace"),
            "diff": k8s.diff_entry(resource, meta["name"], meta.get("namespace"), None, manifest)}


def reconcile(client, params, check_mode):
    namespace = params["namespace"]
    if params["state"] == "absent":
        results, leftovers = [], owned_objects(client, namespace)
    else:
        desired = desired_policies(params)
        results = []
        if params["create_namespace"] and client.get(k8s.NAMESPACE, namespace) is None:
            results.append(k8s.ensure_object(client, namespace_manifest(namespace), check_mode, own_spec=False,
                                             fetched=True))
            if check_mode:
                return results + [planned_creation(manifest) for manifest in desired]
        leftovers = owned_objects(client, namespace)
        for manifest in desired:
            key = (manifest["kind"], manifest["metadata"]["name"])
            if key in leftovers:
                results.append(k8s.ensure_object(client, manifest, check_mode, current=leftovers.pop(key),
                                                 fetched=True))
            else:  # absent, or its labels were removed by hand: the GET in ensure_object tells
                results.append(k8s.ensure_object(client, manifest, check_mode))
    for (kind, name), obj in sorted(leftovers.items()):
        resource = k8s.NETWORK_POLICY if kind == k8s.NETWORK_POLICY.kind else k8s.CILIUM_NETWORK_POLICY
        results.append(k8s.remove_object(client, resource, name, namespace, check_mode, current=obj, fetched=True))
    return results


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    try:
        if module.params["state"] == "present":
            desired_policies(module.params)  # refuse bad input before any request
    except manifests.ManifestError as exc:
        module.fail_json(msg=str(exc))
    client = k8s.client_from_module(module)
    try:
        results = reconcile(client, module.params, module.check_mode)
    except (k8s.K8sError, manifests.ManifestError) as exc:
        module.fail_json(msg=str(exc))
    changed = any(r["changed"] for r in results)
    output = dict(changed=changed, policies=[dict((k, r[k]) for k in ("kind", "name", "namespace", "action"))
                                             for r in results if r["kind"] != "Namespace"])
    if module._diff:
        output["diff"] = [r["diff"] for r in results if r["changed"]]
    module.exit_json(**output)


if __name__ == "__main__":
    main()
