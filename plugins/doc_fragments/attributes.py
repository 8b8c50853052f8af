# -*- coding: utf-8 -*-
# Copyright: (c) 2026, LiteBoxd platform team
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The attributes every module of the collection declares: what each one means. Each module states its
own support (and the platforms it runs on), which Ansible merges into these descriptions."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):

    DOCUMENTATION = r"""
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode), when in diff mode.
  platform:
    description: Target OS/families that can be operated against.
    support: N/A
"""

    # The platform of every Kubernetes module (with liteboxd.sandbox_network.k8s_auth).
    KUBERNETES = r"""
attributes:
  platform:
    platforms: posix
    details: Runs where the task runs (usually the controller) and talks to the Kubernetes API server over HTTPS.
"""

    # The platform of the netlink modules (policy_routing, cube_router).
    LINUX = r"""
attributes:
  platform:
    platforms: linux
    details: Reads and changes the networking state of the Linux kernel it runs on, over netlink, as root.
"""
