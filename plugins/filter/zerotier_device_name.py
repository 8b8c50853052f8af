# -*- coding: utf-8 -*-
# Copyright: (c) 2026, LiteBoxd platform team
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter ``zerotier_device_name``: the device zerotier-one creates for a network (documented in the .yml)."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible.errors import AnsibleFilterError

# zerotier-one's base32 alphabet for device names (osdep/LinuxEthernetTap.cpp).
BASE32 = "abcdefghijklmnopqrstuvwxyz234567"
NETWORK_ID = re.compile(r"^[0-9a-fA-F]{16}$")


def zerotier_device_name(network_id):
    """``zt`` + the 40-bit fold ``nwid ^ (nwid >> 24)`` in base32, as zerotier-one on Linux names the
    device of a network when no devicemap entry names it and no other device has that name."""
    text = str(network_id)
    if not NETWORK_ID.match(text):
        raise AnsibleFilterError("zerotier_device_name: %r is not a ZeroTier network id (16 hexadecimal digits)" % text)
    nwid = int(text, 16)
    folded = (nwid ^ (nwid >> 24)) & 0xFFFFFFFFFF
    return "zt" + "".join(BASE32[(folded >> shift) & 0x1F] for shift in range(35, -1, -5))


class FilterModule(object):
    def filters(self):
        return {"zerotier_device_name": zerotier_device_name}
