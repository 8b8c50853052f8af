# -*- coding: utf-8 -*-
# Copyright: (c) 2026, LiteBoxd platform team
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter ``forward_blockers``: forward-hook chains that drop what they do not accept (documented in the .yml)."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import re

from ansible.errors import AnsibleFilterError

# Statements that do not decide whether a rule matches: such a rule ending in a drop drops everything.
NOT_A_CONDITION = ("counter", "log")
# iptables' unconditional drop in `iptables -S` form (-m comment only labels the rule).
IPTABLES_DROP = re.compile(r"^-A FORWARD (-m comment --comment (\S+|\"[^\"]*\") )?-j (DROP|REJECT)( --reject-with \S+)?$")


def _is_verdict(statement):
    if "drop" in statement or "reject" in statement:
        return True
    target = statement.get("xt") or {}
    return target.get("type") == "target" and target.get("name") in ("DROP", "REJECT")


def _is_condition(statement):
    if any(key in statement for key in NOT_A_CONDITION):
        return False
    match = statement.get("xt") or {}
    return not (match.get("type") == "match" and match.get("name") == "comment")


def _unconditional_drop(rule):
    statements = rule.get("expr") or []
    return bool(statements) and _is_verdict(statements[-1]) and not any(_is_condition(s) for s in statements[:-1])


def forward_blockers(nft_ruleset, iptables_forward="", iptables_backend="", own_table=""):
    """[{where, why, iptables}] for every IPv4 forward-hook base chain but ``own_table`` that drops what
    it does not accept: a drop policy, or a rule that drops everything (unconditionally)."""
    try:
        objects = (json.loads(nft_ruleset) if nft_ruleset else {}).get("nftables", [])
    except (ValueError, AttributeError) as exc:
        raise AnsibleFilterError("forward_blockers: the nft ruleset is not `nft -j list ruleset` output: %s" % exc)
    iptables_nft = iptables_backend == "nf_tables"
    blockers, forward_chains = [], set()
    for item in objects:
        chain = item.get("chain")
        if not chain or chain.get("hook") != "forward" or chain.get("family") not in ("ip", "inet"):
            continue
        if chain["family"] == "ip" and chain["table"] == own_table:
            continue
        key = (chain["family"], chain["table"], chain["name"])
        forward_chains.add(key)
        if chain.get("policy") == "drop":
            blockers.append(_blocker(key, "policy drop", iptables_nft))
    for item in objects:
        rule = item.get("rule")
        if rule and (rule["family"], rule["table"], rule["chain"]) in forward_chains and _unconditional_drop(rule):
            blockers.append(_blocker((rule["family"], rule["table"], rule["chain"]),
                                     "rule %s drops everything" % rule.get("handle"), iptables_nft))
    # Legacy iptables rules live outside nftables; with the nf_tables backend they are in the ruleset above.
    if iptables_backend == "legacy" or (iptables_backend and not objects):
        for line in (iptables_forward or "").splitlines():
            line = line.strip()
            if line == "-P FORWARD DROP":
                blockers.append({"where": "iptables FORWARD", "why": "policy DROP", "iptables": True})
            elif IPTABLES_DROP.match(line):
                blockers.append({"where": "iptables FORWARD", "why": "rule %r drops everything" % line, "iptables": True})
    return blockers


def _blocker(key, why, iptables_nft):
    family, table, name = key
    if iptables_nft and (family, table, name) == ("ip", "filter", "FORWARD"):
        return {"where": "iptables FORWARD", "why": why, "iptables": True}
    return {"where": "nft table %s %s chain %s" % key, "why": why, "iptables": False}


class FilterModule(object):
    def filters(self):
        return {"forward_blockers": forward_blockers}
