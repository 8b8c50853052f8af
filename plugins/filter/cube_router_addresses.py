# -*- coding: utf-8 -*-
# Copyright: (c) 2026, LiteBoxd platform team
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter ``cube_router_addresses``: the cube-router router/NAT addresses (documented in the .yml)."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.liteboxd.sandbox_network.plugins.module_utils.cube_router_addresses import (
    CubeRouterAddressError,
    derive_addresses,
    netaddr,
)


def cube_router_addresses(sandbox_cidr, cidr=None, interface_addresses=None, routes=None, device="cube-router"):
    if netaddr is None:
        raise AnsibleFilterError("cube_router_addresses needs the netaddr Python library on the controller")
    try:
        return derive_addresses(sandbox_cidr, cidr=cidr or None, interface_addresses=interface_addresses or (),
                                routes=routes or (), device=device)
    except CubeRouterAddressError as exc:
        raise AnsibleFilterError(to_native(exc))


class FilterModule(object):
    def filters(self):
        return {"cube_router_addresses": cube_router_addresses}
