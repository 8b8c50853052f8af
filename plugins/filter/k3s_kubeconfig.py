# -*- coding: utf-8 -*-
# Copyright: (c) 2026, LiteBoxd platform team
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter ``k3s_kubeconfig``: a K3s kubeconfig made usable from the controller (documented in the .yml)."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import re

from ansible.errors import AnsibleFilterError
from ansible.module_utils.six import string_types

try:
    import yaml
except ImportError:  # pragma: no cover - PyYAML ships with ansible-core
    yaml = None

ENDPOINT_PATTERN = re.compile(r"^https://[^/\s]+$")


def rewrite_kubeconfig(kubeconfig, endpoint, name=""):
    """Point every cluster at ``endpoint`` and, when ``name`` is given, rename the cluster, user and
    context (K3s calls all three ``default``) so the file can be merged with others."""
    if isinstance(kubeconfig, string_types):
        if yaml is None:
            raise AnsibleFilterError("k3s_kubeconfig needs PyYAML on the controller")
        kubeconfig = yaml.safe_load(kubeconfig)
    if not isinstance(kubeconfig, dict) or not kubeconfig.get("clusters"):
        raise AnsibleFilterError("k3s_kubeconfig: the input is not a kubeconfig (no clusters)")
    if not isinstance(endpoint, string_types) or not ENDPOINT_PATTERN.match(endpoint):
        raise AnsibleFilterError("k3s_kubeconfig: endpoint must be https://<host>:<port>, got %r" % (endpoint,))
    result = copy.deepcopy(kubeconfig)
    for cluster in result["clusters"]:
        cluster["cluster"]["server"] = endpoint
    if name:
        renamed = {}
        for section in ("clusters", "users", "contexts"):
            for entry in result.get(section) or []:
                renamed[(section, entry["name"])] = name
                entry["name"] = name
        for entry in result.get("contexts") or []:
            context = entry["context"]
            context["cluster"] = renamed.get(("clusters", context.get("cluster")), context.get("cluster"))
            context["user"] = renamed.get(("users", context.get("user")), context.get("user"))
        if result.get("current-context"):
            result["current-context"] = renamed.get(("contexts", result["current-context"]), result["current-context"])
    return result


class FilterModule(object):
    def filters(self):
        return {"k3s_kubeconfig": rewrite_kubeconfig}
