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
  - With O(heartbeat_after) a Node counts only once its kubelet has reported after that time, so a Node
    that was Ready before its K3s restarted is not taken for one that is Ready again.
  - While the API server does not answer (connection refused or broken off, or a 5xx status, as when the
    server that serves it is the one restarting), it keeps trying until the deadline.
  - On timeout it fails naming every Node that is not Ready and why (not registered, the C(Ready)
    condition's status, reason and message, no report since O(heartbeat_after), or the API not
    answering), so the failure says which host to look at.
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
  heartbeat_after:
    description:
      - A UTC time, C(YYYY-MM-DDTHH:MM:SSZ). A Node counts as up only when its C(Ready) condition was
        reported later than this (its C(lastHeartbeatTime)).
      - Read it from the node's own clock right before restarting its kubelet (K3s); a kubelet posts its
        status as soon as it starts, so the wait ends when the restarted node reports, not on the status
        it left before the restart.
    type: str
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

- name: Read the node's clock before restarting K3s on it
  ansible.builtin.command: date -u +%Y-%m-%dT%H:%M:%SZ
  register: restart_time
  changed_when: false

- name: Restart K3s
  ansible.builtin.systemd_service:
    name: k3s
    state: restarted

- name: Wait until the restarted node reports Ready again
  liteboxd.sandbox_network.node_ready:
    kubeconfig: ~/.kube/liteboxd.yaml
    names: [server-1]
    heartbeat_after: "{{ restart_time.stdout }}"
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

import datetime
import functools
import re
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.liteboxd.sandbox_network.plugins.module_utils import k8s

NODE = k8s.Resource("v1", "Node", "nodes", False)
# The kubelet's Ready message when its container network is the only problem ("runtime network not
# ready" before Kubernetes 1.2x); several problems are listed as "[a, b]".
NETWORK_ONLY = re.compile(r"^(container )?runtime network not ready:")
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
# Between tries while the API server does not answer.
RETRY_DELAY = 2.0


def ready_condition(node):
    """The Node's ``Ready`` condition, or None (not registered, or no kubelet report yet)."""
    for condition in ((node or {}).get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return condition
    return None


def is_ready(node):
    return (ready_condition(node) or {}).get("status") == "True"


def parse_time(text):
    """A Kubernetes timestamp (whole seconds, UTC) as a datetime, or None."""
    try:
        return datetime.datetime.strptime(text or "", TIME_FORMAT)
    except ValueError:
        return None


def reported_after(node, heartbeat_after):
    """Whether the kubelet reported the Ready condition later than ``heartbeat_after`` (a datetime)."""
    heartbeat = parse_time((ready_condition(node) or {}).get("lastHeartbeatTime"))
    return heartbeat is not None and heartbeat > heartbeat_after


def is_up(node, require_network=True, heartbeat_after=None):
    """Ready, or (when the network is not required) Ready but for its container network; with
    ``heartbeat_after``, as reported after that time."""
    if heartbeat_after is not None and not reported_after(node, heartbeat_after):
        return False
    if is_ready(node):
        return True
    condition = ready_condition(node) or {}
    return (not require_network and condition.get("status") == "False"
            and bool(NETWORK_ONLY.match(condition.get("message") or "")))


def describe(node, heartbeat_after=None):
    """The Node's readiness, or why it is not Ready, in the words a user would look for."""
    if node is None:
        return "not registered (no Node object of that name)"
    condition = ready_condition(node)
    if condition is None:
        return "registered, no Ready condition reported yet"
    details = ": ".join(part for part in (condition.get("reason"), condition.get("message")) if part)
    state = "Ready=%s%s" % (condition.get("status"), " (%s)" % details if details else "")
    if heartbeat_after is not None and not reported_after(node, heartbeat_after):
        state += ", not reported since %s (last %s)" % (
            heartbeat_after.strftime(TIME_FORMAT), condition.get("lastHeartbeatTime") or "never")
    return state


def transient(exc):
    """An API server that does not answer (yet): restarting, or its datastore electing a leader."""
    return isinstance(exc, k8s.K8sUnreachable) or (isinstance(exc, k8s.K8sApiError) and (exc.status or 0) >= 500)


def wait_up(client, name, condition, deadline, describe_state):
    """``k8s.wait_for`` that rides out an API server that does not answer, until the deadline."""
    while True:
        try:
            return k8s.wait_for(client, NODE, name, None, condition, max(0.0, deadline - time.monotonic()),
                                describe_state)
        except k8s.K8sTimeout:
            raise
        except k8s.K8sError as exc:
            if not transient(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(min(RETRY_DELAY, max(0.0, deadline - time.monotonic())))


def state_now(client, name, describe_state):
    """What is said about a Node that is not up: its state, or why the API could not tell."""
    try:
        return describe_state(client.get(NODE, name))
    except k8s.K8sError as exc:
        if not transient(exc):
            raise
        return str(exc)


def summary(node):
    return dict(name=node["metadata"]["name"], ready=is_ready(node), state=describe(node),
                kubelet_version=((node.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion"))


def argument_spec():
    spec = dict(
        names=dict(type='list', elements='str', required=True),
        timeout=dict(type='int', default=300),
        require_network=dict(type='bool', default=True),
        heartbeat_after=dict(type='str'),
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
    heartbeat_after = None
    if module.params['heartbeat_after'] is not None:
        heartbeat_after = parse_time(module.params['heartbeat_after'])
        if heartbeat_after is None:
            module.fail_json(msg='heartbeat_after: %r is not a UTC time YYYY-MM-DDTHH:MM:SSZ (date -u +%%Y-%%m-%%dT%%H:%%M:%%SZ)'
                             % module.params['heartbeat_after'])
    condition = functools.partial(is_up, require_network=module.params['require_network'],
                                  heartbeat_after=heartbeat_after)
    describe_state = functools.partial(describe, heartbeat_after=heartbeat_after)
    client = k8s.client_from_module(module)
    deadline = time.monotonic() + timeout
    up, not_up = [], []
    try:
        for name in names:
            try:
                # Once the deadline has passed, the remaining Nodes are read once, not waited for.
                up.append(wait_up(client, name, condition, deadline, describe_state))
            except k8s.K8sTimeout:
                not_up.append("%s: %s" % (name, state_now(client, name, describe_state)))
            except k8s.K8sError as exc:
                if not transient(exc):
                    raise
                not_up.append("%s: %s" % (name, exc))
    except k8s.K8sError as exc:
        module.fail_json(msg=str(exc))
    if not_up:
        module.fail_json(msg='Nodes not Ready after %ss at %s: %s' % (timeout, client.host, '; '.join(not_up)),
                         nodes=[summary(node) for node in up])
    module.exit_json(changed=False, nodes=[summary(node) for node in up])


if __name__ == '__main__':
    main()
