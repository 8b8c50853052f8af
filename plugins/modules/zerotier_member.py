#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, LiteBoxd platform team
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: zerotier_member
short_description: Authorize, name and assign addresses to a ZeroTier network member
description:
  - >-
    Manages one member of a ZeroTier network on its network controller, either a self-hosted
    controller (zerotier-one's C(/controller/network/<nwid>/member/<node>), flat member object,
    header C(X-ZT1-Auth)) or ZeroTier Central (C(/api/v1/network/<nwid>/member/<node>), C(name) at
    the top level and C(authorized)/C(ipAssignments) nested under C(config), header
    C(Authorization: token <token>)).
  - Reads the member first and posts only the fields that differ, so a second run changes nothing.
  - Network id, node id and addresses are validated before any request is made.
version_added: "0.1.0"
requirements:
  - netaddr (address and CIDR checks)
author:
  - LiteBoxd platform team (@liteboxd)
extends_documentation_fragment:
  - liteboxd.sandbox_network.attributes
attributes:
  check_mode:
    support: full
    details: Reads the member and reports what it would post; posts nothing.
  diff_mode:
    support: full
  platform:
    platforms: posix
    details: Runs where the task runs and talks to the controller API (self-hosted or ZeroTier Central) over HTTP(S).
options:
  api:
    description:
      - Which controller API manages the network.
      - V(controller) is a self-hosted controller served by zerotier-one (usually on the controller
        host at C(http://127.0.0.1:9993), token from its C(authtoken.secret)).
      - V(central) is ZeroTier Central (token created on the Account page of my.zerotier.com).
    type: str
    choices: [controller, central]
    default: controller
  api_url:
    description:
      - Base URL of the API.
      - Defaults to C(http://127.0.0.1:9993) for V(controller) and C(https://api.zerotier.com/api/v1)
        for V(central).
    type: str
  api_token:
    description:
      - The controller's C(authtoken.secret) (V(controller)) or a Central API token (V(central)).
    type: str
    required: true
  network_id:
    description:
      - The 16-digit hexadecimal network id.
    type: str
    required: true
  node_id:
    description:
      - The member's 10-digit hexadecimal ZeroTier address (C(node_id) returned by
        M(liteboxd.sandbox_network.zerotier_network)).
    type: str
    required: true
  state:
    description:
      - V(present) creates or updates the member; V(absent) deletes the member record (which also
        removes its authorization).
    type: str
    choices: [present, absent]
    default: present
  authorized:
    description:
      - Whether the member is authorized on the (private) network. Left as it is when omitted.
    type: bool
  name:
    description:
      - The member's name shown by the controller. Left as it is when omitted.
    type: str
  ip_assignments:
    description:
      - Managed addresses of the member (plain addresses, no prefix length). The list replaces the
        current one; order does not matter. Left as it is when omitted; V([]) clears it.
      - The controller only hands out addresses that fall inside one of the network's managed routes.
    type: list
    elements: str
  validate_certs:
    description:
      - Whether to verify the TLS certificate of O(api_url).
    type: bool
    default: true
  timeout:
    description:
      - Timeout in seconds of one HTTP request.
    type: int
    default: 10
  rate_limit_wait:
    description:
      - Longest total time in seconds to wait on HTTP 429 answers (honouring C(Retry-After)) before
        failing with the API's message. ZeroTier Central limits free accounts to 20 requests per second.
    type: int
    default: 60
notes:
  - Check mode reads the member and predicts the change without a POST or DELETE request.
  - Supports diff mode (C(authorized), C(name), C(ip_assignments) before and after).
  - Run it where the controller API is reachable, for a self-hosted controller usually delegated to
    the controller host; for Central, usually on the Ansible controller (C(delegate_to=localhost)).
seealso:
  - module: liteboxd.sandbox_network.zerotier_network
  - name: Network controller API
    description: The self-hosted controller API (controller/README.md of ZeroTierOne).
    link: https://github.com/zerotier/ZeroTierOne/tree/dev/controller
  - name: ZeroTier Central API
    description: Reference of the Central API.
    link: https://docs.zerotier.com/api/central/ref-v1
"""

EXAMPLES = r"""
- name: Authorize the egress node on a self-hosted controller
  liteboxd.sandbox_network.zerotier_member:
    api: controller
    api_token: "{{ controller_authtoken }}"
    network_id: 8056c2e21c000001
    node_id: "{{ zt.node_id }}"
    authorized: true
    name: egress-1
    ip_assignments: [10.147.17.5]
  delegate_to: zt-controller

- name: Authorize through ZeroTier Central
  liteboxd.sandbox_network.zerotier_member:
    api: central
    api_token: "{{ vault_zerotier_central_token }}"
    network_id: 8056c2e21c000001
    node_id: "{{ zt.node_id }}"
    authorized: true
  delegate_to: localhost

- name: Remove a decommissioned node
  liteboxd.sandbox_network.zerotier_member:
    api: central
    api_token: "{{ vault_zerotier_central_token }}"
    network_id: 8056c2e21c000001
    node_id: 0deadbeef1
    state: absent
  delegate_to: localhost
"""

RETURN = r"""
member:
  description:
    - The managed settings after the task (predicted in check mode); empty after V(state=absent).
  returned: always
  type: dict
  contains:
    authorized:
      description: Whether the member is authorized.
      type: bool
    name:
      description: The member's name.
      type: str
    ip_assignments:
      description: The member's managed addresses, sorted.
      type: list
      elements: str
  sample: {authorized: true, name: egress-1, ip_assignments: [10.147.17.5]}
existed:
  description: Whether the member record existed before the task.
  returned: always
  type: bool
api_response:
  description: The member object as the API last returned it (empty in check mode without a read result).
  returned: always
  type: dict
zerotier_status:
  description: On failure, the HTTP status code the controller API answered. Null when the failure was not an HTTP answer.
  returned: failed
  type: int
  sample: 403
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.liteboxd.sandbox_network.plugins.module_utils.zerotier import (
    ZeroTierError,
    canonical_ip_assignments,
    member_client,
    validate_network_id,
    validate_node_id,
)


def wanted_settings(params):
    """The member fields this task manages (omitted options are left as they are)."""
    wanted = {}
    if params["authorized"] is not None:
        wanted["authorized"] = params["authorized"]
    if params["name"] is not None:
        wanted["name"] = params["name"]
    if params["ip_assignments"] is not None:
        wanted["ip_assignments"] = canonical_ip_assignments(params["ip_assignments"], "ip_assignments")
    return wanted


def run(module):
    params = module.params
    network_id = validate_network_id(params["network_id"], "network_id")
    node_id = validate_node_id(params["node_id"], "node_id")
    wanted = wanted_settings(params)
    client = member_client(params["api"], params["api_token"], base_url=params["api_url"], token_option="api_token",
                           timeout=params["timeout"], validate_certs=params["validate_certs"],
                           rate_limit_wait=params["rate_limit_wait"])

    member = client.get(network_id, node_id)
    existed = member is not None
    current = client.settings(member) if existed else {}

    if params["state"] == "absent":
        changed = existed
        if changed and not module.check_mode:
            client.delete(network_id, node_id)
        result = dict(changed=changed, existed=existed, member={}, api_response={})
        if module._diff:
            result["diff"] = dict(before=current, after={})
        return result

    differing = dict((key, value) for key, value in wanted.items() if current.get(key) != value)
    changed = not existed or bool(differing)
    predicted = dict(current or client.settings({}), **wanted)
    response = member or {}
    if changed and not module.check_mode:
        # The whole differing set goes in one POST; a new member record is created by the same call.
        response = client.update(network_id, node_id, differing)
        predicted = client.settings(response) if response else predicted
    result = dict(changed=changed, existed=existed, member=predicted, api_response=response)
    if module._diff:
        result["diff"] = dict(before=current, after=predicted)
    return result


def argument_spec():
    return dict(
        api=dict(type="str", choices=["controller", "central"], default="controller"),
        api_url=dict(type="str"),
        api_token=dict(type="str", required=True, no_log=True),
        network_id=dict(type="str", required=True),
        node_id=dict(type="str", required=True),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        authorized=dict(type="bool"),
        name=dict(type="str"),
        ip_assignments=dict(type="list", elements="str"),
        validate_certs=dict(type="bool", default=True),
        timeout=dict(type="int", default=10),
        rate_limit_wait=dict(type="int", default=60),
    )


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        supports_check_mode=True,
    )
    try:
        module.exit_json(**run(module))
    except ZeroTierError as exc:
        module.fail_json(msg=str(exc), zerotier_status=exc.status)


if __name__ == "__main__":
    main()
