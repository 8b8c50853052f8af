#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, LiteBoxd platform team
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: node_ready
short_description: Wait until Kubernetes Nodes are registered and Ready
version_added: 0.1.0
description:
  - Watches each named Node until it exists and its C(Ready) condition is C(True), within one deadline
    for all of them (O(timeout)).
  - A Node that is not there yet is waited for too (a kubelet registers its Node when it first starts).
  - With O(require_network=false) a Node whose kubelet reports nothing wrong but its container network
    (C(container runtime network not ready), as on a cluster whose CNI, such as Cilium, is not installed
    yet) counts as up.
  - On timeout it fails naming every Node that is not Ready and why (not registered, or the C(Ready)
    condition's status, reason and message), so the failure says which host to look at.
  - Reads only; check mode waits the same way.
author:
  - LiteBoxd platform team (@liteboxd)
requirements:
  - kubernetes
extends_documentation_fragment:
  - liteboxd.sandbox_network.attributes
  - liteboxd.sandbox_network.attributes.kubernetes
  - liteboxd.sandbox_network.k8s_auth
attributes:
  check_mode:
    support: full
    details: Reads only; check mode waits the same way.
  diff_mode:
    support: none
    details: Reads only; there is nothing to show.
options:
  names:
    description:
      - Node names (for K3s, the C(node-name) setting, else the lower-cased host name).
    type: list
    elements: str
    required: true
  timeout:
    description:
      - Seconds to wait, in total, until every Node is Ready.
    type: int
    default: 300
  require_network:
    description:
      - Whether the Node's container network must be ready too. V(false) accepts a Node that is Ready but
        for its network (no CNI yet); any other reason still counts as not Ready.
    type: bool
    default: true
'''

EXAMPLES = r'''
- name: Wait until the K3s nodes are Ready
  liteboxd.sandbox_network.node_ready:
    kubeconfig: ~/.kube/liteboxd.yaml
    names: [server-1, agent-1]
    timeout: 300
  delegate_to: localhost

- name: Wait for the nodes of a cluster whose CNI is installed next
  liteboxd.sandbox_network.node_ready:
    kubeconfig: ~/.kube/liteboxd.yaml
    names: [server-1]
    require_network: false
  delegate_to: localhost
'''

RETURN = r'''
nodes:
  description: The Nodes found up, in the order of O(names) (on failure, those found up before the deadline).
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Node name.
      type: str
      sample: server-1
    ready:
      description: Whether the C(Ready) condition is C(True) (V(false) only with O(require_network=false)).
      type: bool
      sample: true
    state:
      description: The C(Ready) condition's status, reason and message.
      type: str
      sample: "Ready=False (KubeletNotReady: container runtime network not ready: NetworkReady=false ...)"
    kubelet_version:
      description: The kubelet version the Node reports (C(status.nodeInfo.kubeletVersion)).
      type: str
      sample: v1.33.6+k3s1
'''

import functools
import re
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.liteboxd.sandbox_network.plugins.module_utils import k8s

NODE = k8s.Resource("v1", "Node", "nodes", False)
# The kubelet's Ready message when its container network is the only problem ("runtime network not
# ready" before Kubernetes 1.2x); several problems are listed as "[a, b]".
NETWORK_ONLY = re.compile(r"^(container )?runtime network not ready:")


def ready_condition(node):
    """The Node's ``Ready`` condition, or None (not registered, or no kubelet report yet)."""
    for condition in ((node or {}).get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return condition
    return None


def is_ready(node):
    return (ready_condition(node) or {}).get("status") == "True"


def is_up(node, require_network=True):
    """Ready, or (when the network is not required) Ready but for its container network."""
    if is_ready(node):
        return True
    condition = ready_condition(node) or {}
    return (not require_network and condition.get("status") == "False"
            and bool(NETWORK_ONLY.match(condition.get("message") or "")))


def describe(node):
    """The Node's readiness, or why it is not Ready, in the words a user would look for."""
    if node is None:
        return "not registered (no Node object of that name)"
    condition = ready_condition(node)
    if condition is None:
        return "registered, no Ready condition reported yet"
    details = ": ".join(part for part in (condition.get("reason"), condition.get("message")) if part)
    return "Ready=%s%s" % (condition.get("status"), " (%s)" % details if details else "")


def summary(node):
    return dict(name=node["metadata"]["name"], ready=is_ready(node), state=describe(node),
                kubelet_version=((node.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion"))


def argument_spec():
    spec = dict(
        names=dict(type='list', elements='str', required=True),
        timeout=dict(type='int', default=300),
        require_network=dict(type='bool', default=True),
    )
    spec.update(k8s.AUTH_ARG_SPEC)
    return spec


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    names, timeout = module.params['names'], module.params['timeout']
    if not names or not all(name.strip() for name in names):
        module.fail_json(msg='names: give at least one Node name, none empty (got %s)' % names)
    if timeout < 0:
        module.fail_json(msg='timeout: must be 0 or more seconds (got %d)' % timeout)
    condition = functools.partial(is_up, require_network=module.params['require_network'])
    client = k8s.client_from_module(module)
    deadline = time.monotonic() + timeout
    up, not_up = [], []
    try:
        for name in names:
            try:
                # Once the deadline has passed, the remaining Nodes are read once, not waited for.
                up.append(k8s.wait_for(client, NODE, name, None, condition, max(0.0, deadline - time.monotonic()),
                                       describe))
            except k8s.K8sTimeout:
                not_up.append("%s: %s" % (name, describe(client.get(NODE, name))))
    except k8s.K8sError as exc:
        module.fail_json(msg=str(exc))
    if not_up:
        module.fail_json(msg='Nodes not Ready after %ss at %s: %s' % (timeout, client.host, '; '.join(not_up)),
                         nodes=[summary(node) for node in up])
    module.exit_json(changed=False, nodes=[summary(node) for node in up])


if __name__ == '__main__':
    main()
