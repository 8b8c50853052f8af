"""forward_blockers against real rulesets: each case builds a firewall in a throwaway network namespace
with nft, iptables (nf_tables backend) or iptables-legacy, reads it back the way the egress_exit role
does (nft -j list ruleset, iptables -V, iptables -S FORWARD) and checks which chains the filter says
would drop the tunnel's forwarded traffic."""
import re

import pytest

from ansible_collections.liteboxd.sandbox_network.plugins.filter.forward_blockers import FilterModule
from tests.lib.netns import Netns

forward_blockers = FilterModule().filters()["forward_blockers"]
OWN = "liteboxd_egress_exit"
OWN_TABLE = """table ip liteboxd_egress_exit {
    chain forward {
        type filter hook forward priority filter; policy accept;
        iifname "wan0" oifname "zt0" counter drop
    }
}"""
IPTABLES_POLICY = {"where": "iptables FORWARD", "why": "policy drop", "iptables": True}


def blockers_in(ns, iptables="iptables"):
    backend = re.search(r"\((nf_tables|legacy)\)", ns.run([iptables, "-V"]).stdout).group(1)
    return forward_blockers(ns.run(["nft", "-j", "list", "ruleset"]).stdout,
                            ns.run([iptables, "-S", "FORWARD"]).stdout, backend, OWN)


@pytest.mark.parametrize("commands, nft_rules, expected", [
    ([], None, []),
    # Docker's or ufw's default
    (["iptables -P FORWARD DROP"], None, [IPTABLES_POLICY]),
    (["iptables -A FORWARD -m comment --comment last -j REJECT"], None,
     [{"where": "iptables FORWARD", "why": "rule 2 drops everything", "iptables": True}]),
    # only some traffic: not judged
    (["iptables -A FORWARD -i eth0 -j DROP", "iptables -A FORWARD -s 192.0.2.0/24 -j REJECT"], None, []),
    # a hand-written nftables firewall
    ([], "table inet hostfw { chain forward { type filter hook forward priority 0; policy drop; }\n}",
     [{"where": "nft table inet hostfw chain forward", "why": "policy drop", "iptables": False}]),
    ([], "table ip hostfw { chain fw { type filter hook forward priority 10; counter reject; }\n}",
     [{"where": "nft table ip hostfw chain fw", "why": "rule 2 drops everything", "iptables": False}]),
    # IPv6 only, or not at the forward hook: not in the tunnel's way
    ([], "table ip6 v6fw { chain forward { type filter hook forward priority 0; policy drop; }\n}\n"
         "table inet infw { chain input { type filter hook input priority 0; policy drop; }\n}", []),
    # the exit's own table is left out, even with a drop policy
    ([], OWN_TABLE, []),
    ([], OWN_TABLE.replace("policy accept", "policy drop"), []),
])
def test_the_chains_that_would_drop_forwarded_traffic(commands, nft_rules, expected):
    with Netns() as ns:
        for command in commands:
            ns.run(command)
        if nft_rules:
            ns.run(["nft", "-f", "-"], input=nft_rules)
        assert blockers_in(ns) == expected


def test_legacy_iptables_rules_are_read_from_iptables_itself():
    with Netns() as ns:
        ns.run("iptables-legacy -P FORWARD DROP")
        ns.run("iptables-legacy -A FORWARD -j DROP")
        # invisible to nft: the filter reads iptables-legacy -S
        assert blockers_in(ns, "iptables-legacy") == [
            IPTABLES_POLICY | {"why": "policy DROP"},
            {"where": "iptables FORWARD", "why": "rule '-A FORWARD -j DROP' drops everything", "iptables": True}]


def test_without_nft_the_iptables_chain_is_read_instead():
    assert forward_blockers("", "-P FORWARD DROP\n-A FORWARD -i eth0 -j DROP\n", "nf_tables", OWN) == [
        IPTABLES_POLICY | {"why": "policy DROP"}]
