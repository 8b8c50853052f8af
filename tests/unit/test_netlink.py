"""Pure logic of module_utils/netlink: parsing, normalisation, planning, rendering."""
import socket

import pytest

from ansible_collections.liteboxd.sandbox_network.plugins.module_utils import netlink
from ansible_collections.liteboxd.sandbox_network.plugins.module_utils.netlink import SpecError

NAMES = {name: (table_id, "builtin") for name, table_id in netlink.BUILTIN_TABLES.items()}
NAMES["zerotier-egress"] = (100, "/etc/iproute2/rt_tables.d/zerotier-egress.conf")


def route(**kw):
    spec = dict(dst="default", table="zerotier-egress")
    spec.update(kw)
    return netlink.normalize_route(spec, NAMES, "routes[0]")


def rule(**kw):
    spec = {"priority": 100, "from": "10.147.17.5", "table": "zerotier-egress"}
    spec.update(kw)
    return netlink.normalize_rule(spec, NAMES, "rules[0]")


def kernel(r, proto=4):
    out = dict(r)
    out["proto"] = proto
    if out["dev"] is None and out["type"] == "unicast":
        out["dev"] = "zt0"
    return out


# ---------------------------------------------------------------- rt_tables

def test_parse_rt_tables_skips_comments_and_junk():
    text = "# reserved\n255\tlocal\n254 main # the main one\n\n0x64 hex-table\nbogus line here\n7\n"
    assert netlink.parse_rt_tables(text) == [(255, "local"), (254, "main"), (100, "hex-table")]


def test_read_table_names_reads_dir_conf_files_only(tmp_path):
    base = tmp_path / "rt_tables"
    base.write_text("200 isp2\n")
    d = tmp_path / "rt_tables.d"
    d.mkdir()
    (d / "egress.conf").write_text("100 zerotier-egress\n")
    (d / "ignored.txt").write_text("300 nope\n")
    names = netlink.read_table_names(str(d), files=(str(base),))
    assert names["zerotier-egress"] == (100, str(d / "egress.conf"))
    assert names["isp2"] == (200, str(base))
    assert names["main"] == (254, "builtin")
    assert "nope" not in names


def test_table_clash_by_name_and_by_id(tmp_path):
    names = {"isp2": (200, "/etc/iproute2/rt_tables"), "main": (254, "builtin")}
    with pytest.raises(SpecError, match=r"tables\[0\]: table id clash: isp2 is already mapped to id 200"):
        netlink.check_table_declaration("isp2", 201, names, str(tmp_path), "tables[0]")
    with pytest.raises(SpecError, match=r"id 200 is already mapped to isp2"):
        netlink.check_table_declaration("zerotier-egress", 200, names, str(tmp_path), "tables[0]")
    with pytest.raises(SpecError, match="reserved"):
        netlink.check_table_declaration("x", 254, names, str(tmp_path), "tables[0]")
    with pytest.raises(SpecError, match="not a valid table name"):
        netlink.check_table_declaration("bad name", 5, names, str(tmp_path), "tables[0]")


def test_own_table_file_is_not_a_clash(tmp_path):
    own = netlink.table_file_path("zerotier-egress", str(tmp_path))
    names = {"zerotier-egress": (99, own)}
    netlink.check_table_declaration("zerotier-egress", 100, names, str(tmp_path), "tables[0]")


def test_plan_tables_writes_once(tmp_path):
    declared = [dict(name="zerotier-egress", id=100, state="present")]
    write, delete = netlink.plan_tables(declared, {}, str(tmp_path))
    assert write == [(str(tmp_path / "zerotier-egress.conf"), netlink.table_file_content("zerotier-egress", 100))]
    netlink.write_file(*write[0])
    assert netlink.plan_tables(declared, {}, str(tmp_path)) == ([], [])
    assert netlink.plan_tables([dict(name="zerotier-egress", id=100, state="absent")], {}, str(tmp_path)) == (
        [], [str(tmp_path / "zerotier-egress.conf")])


# ---------------------------------------------------------------- addresses

@pytest.mark.parametrize("value, message", [
    ("10.0.0.1/24", r"host bits set \(did you mean 10.0.0.0/24\?\)"),
    ("10.0.0.0/33", "not a valid IP address or CIDR"),
    ("10.0.0", "not a valid IP address or CIDR"),
    ("zt0", "not a valid IP address or CIDR"),
])
def test_parse_network_rejects(value, message):
    with pytest.raises(SpecError, match=r"routes\[3\].dst: .*" + message):
        netlink.parse_network(value, "routes[3].dst")


def test_parse_network_normalises_host_and_v6():
    assert netlink.parse_network("10.147.17.5", "x") == ("ipv4", "10.147.17.5/32")
    assert netlink.parse_network("fd00::/64", "x") == ("ipv6", "fd00::/64")
    with pytest.raises(SpecError, match="is ipv6 but the item is ipv4"):
        netlink.parse_network("fd00::/64", "x", "ipv4")


def test_overlapping_networks():
    assert netlink.overlapping_networks(["10.42.0.0/16", "10.43.0.0/16", "10.42.3.0/24", "fd00::/8"]) == [
        ("10.42.0.0/16", "10.42.3.0/24")]


# ---------------------------------------------------------------- routes

def test_normalize_route_defaults():
    r = route(via="10.147.17.1", dev="zt0", metric=100)
    assert r == dict(family="ipv4", table=100, dst="0.0.0.0/0", metric=100, type="unicast",
                     via="10.147.17.1", dev="zt0", src=None, scope="global")
    assert route(dst="10.1.0.0/16", dev="zt0")["scope"] == "link"
    assert route(type="unreachable", family="ipv6")["metric"] == netlink.IPV6_DEFAULT_METRIC
    assert route(type="throw", dst="10.42.0.0/16", table="254")["table"] == 254


@pytest.mark.parametrize("kw, message", [
    (dict(via="10.147.17.1.9"), r"routes\[0\].via: '10.147.17.1.9' is not a valid IP address"),
    (dict(type="unreachable", dev="zt0"), "takes neither via nor dev"),
    (dict(), "needs via or dev"),
    (dict(via="fd00::1", dst="10.0.0.0/8"), "is ipv4 but the item is ipv6"),
    (dict(dev="zt0", table="nosuch"), r"routes\[0\].table: unknown table 'nosuch'"),
    (dict(type="nat"), "routes\\[0\\].type"),
])
def test_normalize_route_rejects(kw, message):
    with pytest.raises(SpecError, match=message):
        route(**kw)


def test_plan_routes_add_change_keep_remove():
    gw = route(via="10.147.17.1", dev="zt0", metric=100)
    fail_closed = route(type="unreachable", metric=4278198272)
    throw = route(type="throw", dst="10.42.0.0/16")
    stale = route(type="throw", dst="10.99.0.0/16")
    current = [kernel(gw, proto=3), kernel(dict(fail_closed, type="blackhole")), kernel(stale)]
    add, change, remove = netlink.plan_routes([gw, fail_closed, throw], [], current)
    assert add == [throw]
    assert change == [(current[1], fail_closed)]
    assert remove == []
    _add, _change, remove = netlink.plan_routes([gw, fail_closed, throw], [], current, exclusive_tables=[100])
    assert remove == [current[2]]


def test_plan_routes_desired_without_dev_accepts_kernel_dev():
    gw = route(via="10.147.17.1")
    assert netlink.plan_routes([gw], [], [kernel(dict(gw, dev="zt0"))]) == ([], [], [])


def test_plan_routes_absent_matches_by_key_and_exclusive_keeps_kernel_routes():
    connected = dict(route(dst="10.147.17.0/24", dev="zt0"), proto=netlink.PROTO_KERNEL)
    gw = kernel(route(via="10.147.17.1", dev="zt0", metric=100))
    absent = netlink.normalize_route(dict(dst="default", table="zerotier-egress", metric=100), NAMES, "r", for_absent=True)
    add, change, remove = netlink.plan_routes([], [absent], [connected, gw], exclusive_tables=[100])
    assert (add, change, remove) == ([], [], [gw])


def test_format_route():
    names = {100: "zerotier-egress"}
    assert netlink.format_route(route(via="10.147.17.1", dev="zt0", metric=100), names) == \
        "default via 10.147.17.1 dev zt0 table zerotier-egress metric 100"
    assert netlink.format_route(route(type="unreachable", metric=4278198272), names) == \
        "unreachable default table zerotier-egress metric 4278198272"
    assert netlink.format_route(route(dst="10.9.9.9", dev="zt0", src="10.147.17.5", table="main")) == \
        "10.9.9.9 dev zt0 table 254 src 10.147.17.5"


def test_route_from_msg():
    msg = {"family": socket.AF_INET, "dst_len": 16, "table": 252, "type": 9, "scope": 0, "proto": 4, "flags": 0,
           "attrs": [("RTA_TABLE", 1000), ("RTA_DST", "10.42.0.0")]}
    assert netlink.route_from_msg(msg, {}) == dict(family="ipv4", table=1000, dst="10.42.0.0/16", metric=0,
                                                   type="throw", via=None, dev=None, src=None, scope="global", proto=4)
    msg = {"family": socket.AF_INET, "dst_len": 0, "table": 100, "type": 1, "scope": 0, "proto": 4, "flags": 0,
           "attrs": [("RTA_TABLE", 100), ("RTA_PRIORITY", 100), ("RTA_GATEWAY", "10.147.17.1"), ("RTA_OIF", 3)]}
    parsed = netlink.route_from_msg(msg, {3: "zt0"})
    assert netlink.route_matches(route(via="10.147.17.1", dev="zt0", metric=100), parsed)


# ---------------------------------------------------------------- rules

def test_normalize_rule_and_fwmark():
    r = rule(fwmark="0x10/0xff", iif="eth0")
    assert r == {"family": "ipv4", "priority": 100, "from": "10.147.17.5/32", "to": None, "iif": "eth0",
                 "oif": None, "fwmark": 16, "fwmask": 255, "invert": False, "action": "lookup", "table": 100}
    assert rule(fwmark="5")["fwmask"] == 0xffffffff
    assert rule(action="unreachable", table=None)["table"] is None


@pytest.mark.parametrize("kw, message", [
    (dict(priority=None), r"rules\[0\].priority is required"),
    (dict(priority=0), r"rules\[0\].priority: 0 is out of range"),
    ({"from": "10.147.17.5/16"}, r"rules\[0\].from: .*host bits"),
    (dict(fwmark="mark"), r"rules\[0\].fwmark"),
    (dict(action="unreachable"), "looks up no table"),
    (dict(table=None), "table is required"),
])
def test_normalize_rule_rejects(kw, message):
    with pytest.raises(SpecError, match=message):
        rule(**kw)


def test_rule_from_msg_roundtrip():
    msg = {"family": socket.AF_INET, "dst_len": 0, "src_len": 32, "table": 100, "action": 1, "flags": 0,
           "attrs": [("FRA_TABLE", 100), ("FRA_PRIORITY", 100), ("FRA_SRC", "10.147.17.5")]}
    assert netlink.rule_from_msg(msg) == rule()
    local = {"family": socket.AF_INET, "dst_len": 0, "src_len": 0, "table": 255, "action": 1, "flags": 0,
             "attrs": [("FRA_TABLE", 255)]}
    assert netlink.rule_from_msg(local)["priority"] == 0


def test_plan_rules_replace_shadowing_rule_and_exclusive():
    main = dict(rule(), priority=32766, table=254, **{"from": None})
    old_target = dict(rule(), table=200)
    stray = rule(priority=150, **{"from": "10.147.17.9"})
    add, remove = netlink.plan_rules([rule()], [], [main, old_target, stray])
    assert add == [rule()]
    assert remove == [old_target]
    add, remove = netlink.plan_rules([rule()], [], [main, rule(), stray], exclusive_tables=[100])
    assert (add, remove) == ([], [stray])


def test_plan_rules_absent_pattern_without_priority():
    pattern = netlink.normalize_rule({"from": "10.147.17.5", "table": "zerotier-egress"}, NAMES, "r",
                                     require_priority=False)
    current = [rule(), rule(priority=200), rule(priority=300, table=254)]
    assert netlink.plan_rules([], [pattern], current) == ([], current[:2])


def test_duplicate_selectors_names_both_items():
    a = dict(rule(), where="rules[0]")
    b = dict(rule(table=254), where="rules[2]")
    with pytest.raises(SpecError, match=r"rules\[2\]: priority clash with rules\[0\]"):
        netlink.duplicate_selectors([a, b])


def test_format_rule():
    names = {100: "zerotier-egress"}
    assert netlink.format_rule(rule(), names) == "100: from 10.147.17.5 lookup zerotier-egress"
    assert netlink.format_rule(rule(fwmark="0x10/0xff", iif="eth0", to="10.0.0.0/8"), names) == \
        "100: from 10.147.17.5 to 10.0.0.0/8 fwmark 0x10/0xff iif eth0 lookup zerotier-egress"
    assert netlink.format_rule(rule(action="prohibit", table=None, **{"from": None})) == "100: from all prohibit"


def test_journal_rolls_back_in_reverse():
    done = []

    def refuse():
        raise netlink.KernelError(17, "File exists")

    journal = netlink.Journal()
    journal.run(lambda: done.append("a"), lambda: done.append("undo a"), "a")
    journal.run(lambda: done.append("b"), lambda: done.append("undo b"), "b")
    with pytest.raises(netlink.ApplyError, match="c: the kernel refused it: File exists") as info:
        journal.run(refuse, lambda: None, "c")
    assert info.value.undone
    assert done == ["a", "b", "undo b", "undo a"]
