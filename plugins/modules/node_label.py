#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, LiteBoxd platform team
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: node_label
short_description: Set or remove labels on a Kubernetes Node
version_added: 0.1.0
description:
  - Sets labels on an existing Node (for example C(liteboxd.io/role=egress), which the egress gateway
    policy selects) or removes them, with a JSON merge patch that touches no other label.
  - Check mode sends the patch with server-side dry run; diff shows the Node's labels before and after.
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
    details: The patch is sent with server-side dry run, so the API server validates it and stores nothing.
  diff_mode:
    support: full
options:
  name:
    description:
      - Node name.
    type: str
    required: true
  labels:
    description:
      - Labels to set (C(state=present)) or to remove (C(state=absent); values are then ignored).
    type: dict
    required: true
  state:
    description:
      - Whether the labels are present.
    type: str
    choices: [present, absent]
    default: present
'''

EXAMPLES = r'''
- name: Mark the egress node
  liteboxd.sandbox_network.node_label:
    kubeconfig: /etc/rancher/k3s/k3s.yaml
    name: egress-1
    labels:
      liteboxd.io/role: egress

- name: Unmark it (rollback)
  liteboxd.sandbox_network.node_label:
    kubeconfig: /etc/rancher/k3s/k3s.yaml
    name: egress-1
    labels:
      liteboxd.io/role: egress
    state: absent
'''

RETURN = r'''
labels:
  description: The Node's labels after the change (predicted in check mode).
  returned: success
  type: dict
  sample: {"kubernetes.io/hostname": "egress-1", "liteboxd.io/role": "egress"}
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.liteboxd.sandbox_network.plugins.module_utils import k8s

NODE = k8s.Resource("v1", "Node", "nodes", False)


def label_patch(current, wanted, state):
    """The ``metadata.labels`` merge patch that makes ``current`` hold ``wanted`` (None = no change)."""
    if state == 'present':
        patch = dict((k, v) for k, v in wanted.items() if current.get(k) != v)
    else:
        patch = dict((k, None) for k in wanted if k in current)
    return patch or None


def argument_spec():
    spec = dict(
        name=dict(type='str', required=True),
        labels=dict(type='dict', required=True),
        state=dict(type='str', choices=['present', 'absent'], default='present'),
    )
    spec.update(k8s.AUTH_ARG_SPEC)
    return spec


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    name, state = module.params['name'], module.params['state']
    wanted = module.params['labels']
    if state == 'present':
        bad = sorted(k for k, v in wanted.items() if not isinstance(v, str) or not v.strip())
        if bad:
            module.fail_json(msg='labels: give every label a non-empty string value (%s)' % ', '.join(bad))
    client = k8s.client_from_module(module)
    try:
        node = client.get(NODE, name)
        if node is None:
            module.fail_json(msg='name: Node %s does not exist in the cluster at %s' % (name, client.host))
        before = dict(node['metadata'].get('labels') or {})
        patch = label_patch(before, wanted, state)
        after = before
        if patch:
            node = client.patch(NODE, name, None, {'metadata': {'labels': patch}}, dry_run=module.check_mode)
            after = dict(node['metadata'].get('labels') or {})
    except k8s.K8sError as exc:
        module.fail_json(msg=str(exc))
    result = dict(changed=bool(patch), labels=after)
    if module._diff:
        result['diff'] = dict(before={'labels': before}, after={'labels': after})
    module.exit_json(**result)


if __name__ == '__main__':
    main()
