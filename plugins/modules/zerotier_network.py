#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, LiteBoxd platform team
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: zerotier_network
short_description: Join or leave a ZeroTier network through the local zerotier-one service API
description:
  - Joins, leaves or reports a ZeroTier network on the host that runs zerotier-one, through the
    local service API (C(http://127.0.0.1:9993), header C(X-ZT1-Auth)).
  - After joining it waits until the network status is C(OK) and the controller has assigned an
    address, and returns the node id, the virtual device name (C(portDeviceName)) and the addresses.
  - C(ACCESS_DENIED) fails at once with the node and network to authorize, unless
    O(wait_for_authorization=true) (then it keeps waiting until O(wait_timeout)).
    C(NOT_FOUND), C(PORT_ERROR), C(CLIENT_TOO_OLD) and C(AUTHENTICATION_REQUIRED) fail with a message
    that says what to fix.
  - The network id is validated before any request is made.
version_added: "0.1.0"
author:
  - LiteBoxd platform team (@liteboxd)
extends_documentation_fragment:
  - liteboxd.sandbox_network.attributes
attributes:
  check_mode:
    support: full
    details: Reads the network and reports the join, leave or settings change it would make; changes nothing.
  diff_mode:
    support: full
  platform:
    platforms: posix
    details: Runs on the host whose zerotier-one service it manages, through that service's local API.
options:
  network_id:
    description:
      - The 16-digit hexadecimal ZeroTier network id (controller address followed by 6 digits).
    type: str
    required: true
  state:
    description:
      - V(present) joins the network (the node is a member), V(absent) leaves it.
      - V(query) changes nothing and reports the current membership and status.
    type: str
    choices: [present, absent, query]
    default: present
  api_url:
    description:
      - Base URL of the local zerotier-one service API.
    type: str
    default: http://127.0.0.1:9993
  api_token:
    description:
      - The service API token (contents of C(authtoken.secret)).
      - When omitted the module reads O(api_token_file) on the target.
    type: str
  api_token_file:
    description:
      - File that holds the service API token, read when O(api_token) is not given.
      - Defaults to C(/var/lib/zerotier-one/authtoken.secret) when neither option is given.
    type: path
  allow_managed:
    description:
      - The local C(allowManaged) setting (let the controller assign addresses and routes).
      - Left as it is when omitted.
    type: bool
  allow_global:
    description:
      - The local C(allowGlobal) setting (accept managed addresses/routes that overlap global IPs).
      - Left as it is when omitted.
    type: bool
  allow_default:
    description:
      - The local C(allowDefault) setting (let the network override the default route).
      - Left as it is when omitted. The tunnelled egress keeps it V(false) and routes by policy instead.
    type: bool
  allow_dns:
    description:
      - The local C(allowDNS) setting (accept DNS configuration pushed by the network).
      - Left as it is when omitted.
    type: bool
  wait:
    description:
      - With V(state=present), wait until the status is C(OK) and (with O(require_address)) an
        address is assigned.
    type: bool
    default: true
  wait_timeout:
    description:
      - Seconds to wait for O(wait).
    type: int
    default: 120
  poll_interval:
    description:
      - Seconds between two status reads while waiting.
    type: float
    default: 2.0
  require_address:
    description:
      - Whether waiting also requires at least one assigned address (C(assignedAddresses)).
    type: bool
    default: true
  wait_for_authorization:
    description:
      - When the controller answers C(ACCESS_DENIED), keep waiting (someone authorizes the node
        meanwhile) instead of failing at once.
    type: bool
    default: false
  timeout:
    description:
      - Timeout in seconds of one HTTP request.
    type: int
    default: 10
  rate_limit_wait:
    description:
      - Longest total time in seconds to wait on HTTP 429 answers (honouring C(Retry-After)) before failing.
    type: int
    default: 60
notes:
  - Check mode reads the current state and predicts the change; it makes no POST or DELETE request.
  - Supports diff mode (the membership and the local settings before and after).
seealso:
  - module: liteboxd.sandbox_network.zerotier_member
  - name: ZeroTier service API
    description: Reference of the local service API.
    link: https://docs.zerotier.com/api/service/ref-v1
"""

EXAMPLES = r"""
- name: Join the egress network and wait for an address
  liteboxd.sandbox_network.zerotier_network:
    network_id: 8056c2e21c000001
    allow_default: false
  register: zt

- name: Show the tunnel device and address
  ansible.builtin.debug:
    msg: "{{ zt.port_device_name }} {{ zt.assigned_addresses }}"

- name: Join and wait until an operator authorizes the node in ZeroTier Central
  liteboxd.sandbox_network.zerotier_network:
    network_id: 8056c2e21c000001
    wait_for_authorization: true
    wait_timeout: 600

- name: Leave the network
  liteboxd.sandbox_network.zerotier_network:
    network_id: 8056c2e21c000001
    state: absent
"""

RETURN = r"""
node_id:
  description: The 10-digit ZeroTier address of this node (C(address) from C(/status)).
  returned: always
  type: str
  sample: 0deadbeef1
network_id:
  description: The network id, in lower case.
  returned: always
  type: str
  sample: 8056c2e21c000001
joined:
  description: Whether the node is (or in check mode would be) a member of the network.
  returned: always
  type: bool
status:
  description:
    - The network status (C(OK), C(REQUESTING_CONFIGURATION), C(ACCESS_DENIED), ...).
    - Empty when the node is not joined or in check mode before a join.
  returned: always
  type: str
  sample: OK
port_device_name:
  description: Name of the virtual network device (C(portDeviceName)); empty until the device exists.
  returned: always
  type: str
  sample: zt4xyqdgpe
assigned_addresses:
  description: Addresses assigned by the controller, with prefix length.
  returned: always
  type: list
  elements: str
  sample: [10.147.17.5/24]
addresses:
  description: RV(assigned_addresses) without the prefix length.
  returned: always
  type: list
  elements: str
  sample: [10.147.17.5]
network:
  description: The network object from the service API as last read (empty when not joined).
  returned: always
  type: dict
zerotier_status:
  description:
    - On failure, what it came from. The network status that ended the wait (for example C(ACCESS_DENIED)), or the
      HTTP status code the service API answered. Null when neither applies.
  returned: failed
  type: raw
  sample: ACCESS_DENIED
"""

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.liteboxd.sandbox_network.plugins.module_utils.zerotier import (
    DEFAULT_AUTHTOKEN_FILE,
    STATUS_ACCESS_DENIED,
    STATUS_AUTHENTICATION_REQUIRED,
    STATUS_CLIENT_TOO_OLD,
    STATUS_NOT_FOUND,
    STATUS_OK,
    STATUS_PORT_ERROR,
    ServiceClient,
    ZeroTierError,
    read_token_file,
    validate_network_id,
)

# Module option -> writable field of the service API's network object.
LOCAL_SETTINGS = {
    "allow_managed": "allowManaged",
    "allow_global": "allowGlobal",
    "allow_default": "allowDefault",
    "allow_dns": "allowDNS",
}


def _fatal_status_message(network, node_id, network_id):
    """The message for a status that waiting cannot fix, or None."""
    status = network.get("status")
    if status == STATUS_NOT_FOUND:
        return ("the controller of network %s says it does not exist (NOT_FOUND): check network_id, and that the "
                "controller %s is online" % (network_id, network_id[:10]))
    if status == STATUS_PORT_ERROR:
        return ("zerotier-one could not create the virtual network device for network %s (PORT_ERROR, portError=%s): "
                "check that /dev/net/tun exists and the service may use it" % (network_id, network.get("portError")))
    if status == STATUS_CLIENT_TOO_OLD:
        return ("the controller of network %s requires a newer zerotier-one (CLIENT_TOO_OLD): upgrade the package "
                "on node %s" % (network_id, node_id))
    if status == STATUS_AUTHENTICATION_REQUIRED:
        return ("network %s requires SSO authentication (AUTHENTICATION_REQUIRED) for node %s: authenticate at %s"
                % (network_id, node_id, network.get("authenticationURL") or "the network's SSO login"))
    return None


def _authorize_message(node_id, network_id):
    return ("authorize node %s on network %s (status ACCESS_DENIED): use liteboxd.sandbox_network.zerotier_member "
            "or the controller's UI, or set wait_for_authorization to wait for it" % (node_id, network_id))


def _ready(network, require_address):
    return network.get("status") == STATUS_OK and (not require_address or bool(network.get("assignedAddresses")))


def wait_for_network(module, client, network_id, node_id):
    """Poll GET /network/<nwid> until it is usable; fail with a status-specific message."""
    params = module.params
    deadline = time.monotonic() + params["wait_timeout"]
    while True:
        network = client.network(network_id)
        if network is None:
            raise ZeroTierError("network %s disappeared from zerotier-one while waiting for it (left by someone else?)"
                                % network_id)
        if _ready(network, params["require_address"]):
            return network
        fatal = _fatal_status_message(network, node_id, network_id)
        if fatal:
            raise ZeroTierError(fatal, status=network.get("status"))
        status = network.get("status")
        if status == STATUS_ACCESS_DENIED and not params["wait_for_authorization"]:
            raise ZeroTierError(_authorize_message(node_id, network_id), status=status)
        if time.monotonic() >= deadline:
            if status == STATUS_ACCESS_DENIED:
                reason = _authorize_message(node_id, network_id)
            elif status == STATUS_OK:
                reason = ("network %s is OK but no address was assigned to node %s: give the network an IP assignment "
                          "pool or the member an ipAssignments entry, and keep allow_managed true"
                          % (network_id, node_id))
            else:
                reason = "network %s is still %s" % (network_id, status)
            raise ZeroTierError("timed out after %ss waiting for network %s: %s"
                                % (params["wait_timeout"], network_id, reason), status=status)
        time.sleep(params["poll_interval"])


def _result_for(network_id, node_id, network, joined):
    network = network or {}
    assigned = list(network.get("assignedAddresses") or [])
    return dict(
        network_id=network_id,
        node_id=node_id,
        joined=joined,
        status=network.get("status") or "",
        port_device_name=network.get("portDeviceName") or "",
        assigned_addresses=assigned,
        addresses=[address.split("/")[0] for address in assigned],
        network=network,
    )


def _view(joined, network, wanted_settings):
    """What diff shows: membership and the local settings this task manages."""
    view = {"joined": joined}
    for option, field in LOCAL_SETTINGS.items():
        if option in wanted_settings:
            view[field] = (network or {}).get(field)
    return view


def run(module):
    params = module.params
    network_id = validate_network_id(params["network_id"], "network_id")
    token = params["api_token"]
    token_option = "api_token"
    if not token:
        token_file = params["api_token_file"] or DEFAULT_AUTHTOKEN_FILE
        token = read_token_file(token_file)
        token_option = "api_token_file (%s)" % token_file
    client = ServiceClient(token, base_url=params["api_url"], token_option=token_option,
                           timeout=params["timeout"], rate_limit_wait=params["rate_limit_wait"])

    node_id = client.node_status().get("address", "")
    current = client.network(network_id)
    joined = current is not None
    wanted_settings = dict((option, params[option]) for option in LOCAL_SETTINGS if params[option] is not None)

    if params["state"] == "query":
        return dict(changed=False, **_result_for(network_id, node_id, current, joined))

    if params["state"] == "absent":
        changed = joined
        if changed and not module.check_mode:
            client.leave(network_id)
        result = dict(changed=changed, **_result_for(network_id, node_id, None, False))
        if module._diff:
            result["diff"] = dict(before=_view(joined, current, {}), after=_view(False, None, {}))
        return result

    differing = dict((LOCAL_SETTINGS[option], value) for option, value in wanted_settings.items()
                     if not joined or current.get(LOCAL_SETTINGS[option]) != value)
    changed = not joined or bool(differing)
    predicted = dict(current or {}, **dict((LOCAL_SETTINGS[o], v) for o, v in wanted_settings.items()))
    before = _view(joined, current, wanted_settings)
    after = _view(True, predicted, wanted_settings)

    if module.check_mode:
        # Nothing is posted, so there is nothing to wait for: report what is there now.
        result = dict(changed=changed, **_result_for(network_id, node_id, current, True))
    else:
        network = client.join(network_id, differing) if changed else current
        if params["wait"]:
            try:
                network = wait_for_network(module, client, network_id, node_id)
            except ZeroTierError as exc:
                exc.changed = changed  # the join itself happened: say so in the failure
                raise
        result = dict(changed=changed, **_result_for(network_id, node_id, network, True))
    if module._diff:
        result["diff"] = dict(before=before, after=after)
    return result


def argument_spec():
    return dict(
        network_id=dict(type="str", required=True),
        state=dict(type="str", choices=["present", "absent", "query"], default="present"),
        api_url=dict(type="str", default="http://127.0.0.1:9993"),
        api_token=dict(type="str", no_log=True),
        api_token_file=dict(type="path"),
        allow_managed=dict(type="bool"),
        allow_global=dict(type="bool"),
        allow_default=dict(type="bool"),
        allow_dns=dict(type="bool"),
        wait=dict(type="bool", default=True),
        wait_timeout=dict(type="int", default=120),
        poll_interval=dict(type="float", default=2.0),
        require_address=dict(type="bool", default=True),
        wait_for_authorization=dict(type="bool", default=False),
        timeout=dict(type="int", default=10),
        rate_limit_wait=dict(type="int", default=60),
    )


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        mutually_exclusive=[("api_token", "api_token_file")],
        supports_check_mode=True,
    )
    try:
        module.exit_json(**run(module))
    except ZeroTierError as exc:
        module.fail_json(msg=str(exc), zerotier_status=exc.status, changed=getattr(exc, "changed", False))


if __name__ == "__main__":
    main()
