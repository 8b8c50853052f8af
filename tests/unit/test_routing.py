"""The routing model (module_utils/routing): normalising, parsing, rendering and planning."""
import json
import os
import socket

import pytest
from ansible.module_utils import basic

from ansible_collections.liteboxd.sandbox_network.plugins.module_utils import routing
from ansible_collections.liteboxd.sandbox_network.plugins.module_utils.routing import Route, Rule, SpecError

NAMES = {name: (table_id, "builtin") for name, table_id in routing.BUILTIN_TABLES.items()}
NAMES["zerotier-egress"] = (100, "/etc/iproute2/rt_tables.d/zerotier-egress.conf")
TABLE_NAMES = routing.table_name_map(NAMES)


def route(**kw):
    spec = dict(dst="default", table="zerotier-egress")
    spec.update(kw)
    return routing.normalize_route(spec, NAMES, "routes[0]")


def rule(**kw):
    spec = {"priority": 100, "from": "10.147.17.5", "table": "zerotier-egress"}
    spec.update(kw)
    return routing.normalize_rule(spec, NAMES, "rules[0]")


def kernel(r, proto=routing.PROTO_STATIC, dev="zt0"):
    """``r`` as the kernel reports it: with a device and its originator."""
    return r._replace(proto=proto, dev=r.dev or (dev if r.type == "unicast" else None))


def tables(*specs):
    return [dict(dict(state="present", exclusive=False), **spec) for spec in specs]


# ---------------------------------------------------------------- errors

def test_spec_error_names_the_option_once():
    assert str(SpecError("routes[0].via", "bad")) == "routes[0].via: bad"
    error = SpecError("tables[0].id", "tables[0].id is required")
    assert str(error) == "tables[0].id is required" and error.option == "tables[0].id"


# ---------------------------------------------------------------- tables

def test_parse_rt_tables_skips_comments_and_junk():
    text = "# reserved\n255\tlocal\n254 main # the main one\n\n0x64 hex-table\nbogus line here\n7\n"
    assert routing.parse_rt_tables(text) == [(255, "local"), (254, "main"), (100, "hex-table")]


def test_read_table_names_reads_dir_conf_files_only(tmp_path):
    base = tmp_path / "rt_tables"
    base.write_text("200 isp2\n")
    d = tmp_path / "rt_tables.d"
    d.mkdir()
    (d / "egress.conf").write_text("100 zerotier-egress\n")
    (d / "ignored.txt").write_text("300 nope\n")
    names = routing.read_table_names(str(d), files=(str(base),))
    assert names["zerotier-egress"] == (100, str(d / "egress.conf"))
    assert names["isp2"] == (200, str(base))
    assert names["main"] == (254, "builtin")
    assert "nope" not in names


@pytest.mark.parametrize("spec, message", [
    (dict(name="isp2", id=201), r"tables\[0\]: table id clash: isp2 is already mapped to id 200"),
    (dict(name="zerotier-egress", id=200), r"id 200 is already mapped to isp2"),
    (dict(name="x", id=254), r"tables\[0\]: table x/254 is reserved"),
    (dict(name="bad name", id=5), r"tables\[0\]\.name: 'bad name' is not a valid table name"),
    (dict(name="x"), r"tables\[0\]\.id is required for a present table"),
])
def test_table_declarations_that_clash_or_are_incomplete(tmp_path, spec, message):
    names = {"isp2": (200, "/etc/iproute2/rt_tables"), "main": (254, "builtin")}
    with pytest.raises(SpecError, match=message):
        routing.declare_tables(tables(spec), names, str(tmp_path))


def test_own_table_file_is_no_clash_and_the_view_names_it(tmp_path):
    own = str(tmp_path / "zerotier-egress.conf")
    declared, view = routing.declare_tables(tables(dict(name="zerotier-egress", id=100)),
                                            {"zerotier-egress": (99, own)}, str(tmp_path))
    assert declared == [routing.Table("zerotier-egress", 100, "present", False)]
    assert view["zerotier-egress"] == (100, own)


def test_plan_files_writes_once_and_checks_the_mode(tmp_path):
    table = routing.Table("zerotier-egress", 100, "present", False)
    wanted = [(table.path(str(tmp_path)), table.content(), 0o644)]
    assert routing.plan_files(wanted, []) == (wanted, [])
    path = tmp_path / "zerotier-egress.conf"
    path.write_text(table.content())
    path.chmod(0o600)
    assert routing.plan_files(wanted, []) == (wanted, [])  # the mode alone differs
    path.chmod(0o644)
    assert routing.plan_files(wanted, [str(path)]) == ([], [str(path)])
    assert path.read_text().splitlines()[-1] == "100 zerotier-egress"


# ---------------------------------------------------------------- addresses

@pytest.mark.parametrize("value, message", [
    ("10.0.0.1/24", r"host bits set \(did you mean 10.0.0.0/24\?\)"),
    ("10.0.0.0/33", "not a valid IP address or CIDR"),
    ("10.0.0.0/x", "not a valid IP address or CIDR"),
    ("10.0.0", "not a valid IP address or CIDR"),
    ("zt0", "not a valid IP address or CIDR"),
])
def test_parse_network_rejects(value, message):
    with pytest.raises(SpecError, match=r"routes\[3\].dst: .*" + message):
        routing.parse_network(value, "routes[3].dst")


def test_parse_network_and_address_normalise():
    assert routing.parse_network("10.147.17.5", "x") == ("ipv4", "10.147.17.5/32")
    assert routing.parse_network("fd00:0::/64", "x") == ("ipv6", "fd00::/64")
    assert routing.parse_address("fd00:0::1", "x") == ("ipv6", "fd00::1")
    with pytest.raises(SpecError, match="is ipv6 but the item is ipv4"):
        routing.parse_network("fd00::/64", "x", "ipv4")
    with pytest.raises(SpecError, match="not a valid IP address"):
        routing.parse_address("10.0.0.1/32", "x")


# ---------------------------------------------------------------- routes

def test_normalize_route_defaults():
    assert route(via="10.147.17.1", dev="zt0", metric=100) == Route(
        "ipv4", 100, "0.0.0.0/0", 100, "unicast", "10.147.17.1", "zt0", None, "global", False, routing.PROTO_STATIC)
    assert route(dst="10.1.0.0/16", dev="zt0").scope == "link"
    assert route(type="unreachable", family="ipv6").metric == routing.IPV6_DEFAULT_METRIC
    assert route(type="throw", dst="10.42.0.0/16", table="254").table == 254
    assert route(via="10.147.17.1", onlink=True).onlink


@pytest.mark.parametrize("kw, message", [
    (dict(via="10.147.17.1.9"), r"routes\[0\].via: '10.147.17.1.9' is not a valid IP address"),
    (dict(type="unreachable", dev="zt0"), "takes neither via nor dev"),
    (dict(), "needs via or dev"),
    (dict(dst=None), r"routes\[0\]\.dst is required"),
    (dict(via="fd00::1", dst="10.0.0.0/8"), "is ipv4 but the item is ipv6"),
    (dict(dev="zt0", table="nosuch"), r"routes\[0\].table: unknown table 'nosuch'"),
    (dict(dev="a very long name"), r"routes\[0\].dev: 'a very long name' is not a valid interface name"),
    (dict(type="nat"), "routes\\[0\\].type"),
])
def test_normalize_route_rejects(kw, message):
    with pytest.raises(SpecError, match=message):
        route(**kw)


def test_a_family_restriction_names_the_field():
    with pytest.raises(SpecError) as info:
        routing.normalize_route(dict(dst="10.0.0.0/8", via="fe80::1"), NAMES, "routes[2]", family="ipv4")
    assert info.value.option == "routes[2].via"


def test_plan_routes_add_change_keep_remove():
    gw = route(via="10.147.17.1", dev="zt0", metric=100)
    fail_closed = route(type="unreachable", metric=4278198272)
    throw = route(type="throw", dst="10.42.0.0/16")
    stale = route(type="throw", dst="10.99.0.0/16")
    current = [kernel(gw, proto=3), kernel(fail_closed._replace(type="blackhole")), kernel(stale)]
    add, change, remove = routing.plan_routes([gw, fail_closed, throw], [], current)
    assert add == [throw]
    assert change == [(current[1], fail_closed)]
    assert remove == []
    assert routing.plan_routes([gw, fail_closed, throw], [], current, exclusive_tables=[100])[2] == [current[2]]


def test_plan_routes_wanted_without_dev_accepts_the_kernels_device():
    gw = route(via="10.147.17.1")
    assert routing.plan_routes([gw], [], [kernel(gw)]) == ([], [], [])
    assert routing.plan_routes([gw._replace(onlink=True)], [], [kernel(gw)])[1]  # onlink differs


def test_plan_routes_absent_matches_by_key_and_exclusive_keeps_kernel_routes():
    connected = kernel(route(dst="10.147.17.0/24", dev="zt0"), proto=routing.PROTO_KERNEL)
    gw = kernel(route(via="10.147.17.1", dev="zt0", metric=100))
    absent = routing.normalize_route(dict(dst="default", table="zerotier-egress", metric=100), NAMES, "r",
                                     for_absent=True)
    assert routing.plan_routes([], [absent], [connected, gw], exclusive_tables=[100]) == ([], [], [gw])


def test_route_text_for_results_scripts_and_the_boot_file():
    assert routing.route_text(route(via="10.147.17.1", dev="zt0", metric=100), TABLE_NAMES) == \
        "default via 10.147.17.1 dev zt0 table zerotier-egress metric 100"
    assert routing.route_text(route(type="unreachable", metric=4278198272), TABLE_NAMES) == \
        "unreachable default table zerotier-egress metric 4278198272"
    # main is left out, as ip does; a host route keeps its length (what ip route add takes)
    assert routing.route_text(route(dst="10.9.9.9", dev="zt0", src="10.147.17.5", table="main")) == \
        "10.9.9.9/32 dev zt0 src 10.147.17.5"
    assert routing.route_text(route(via="10.147.17.1", dev="zt0", onlink=True, scope="link", table="main")) == \
        "default via 10.147.17.1 dev zt0 onlink scope link"
    # the boot file: tables by number, the protocol, and an IPv6 default ip -batch reads as IPv6
    assert routing.route_text(route(via="10.147.17.1", dev="zt0", metric=100), batch=True) == \
        "default via 10.147.17.1 dev zt0 table 100 proto static metric 100"
    assert routing.route_text(route(type="unreachable", family="ipv6"), batch=True) == \
        "unreachable ::/0 table 100 proto static"
    assert routing.route_text(route(type="unreachable", family="ipv6"), TABLE_NAMES) == \
        "unreachable default table zerotier-egress"


def msg(family=socket.AF_INET, flags=0, **fields):
    """A decoded route or rule message, as netlink.Session.dump returns it."""
    attrs = fields.pop("attrs")
    message = dict(family=family, flags=flags, **fields)
    message["attrs"] = attrs
    return message


def test_route_from_msg():
    throw = msg(dst_len=16, table=252, type=9, scope=0, proto=4, attrs={"RTA_TABLE": 1000, "RTA_DST": "10.42.0.0"})
    assert routing.route_from_msg(throw, {}) == Route(
        "ipv4", 1000, "10.42.0.0/16", 0, "throw", None, None, None, "global", False, 4)
    gw = msg(dst_len=0, table=100, type=1, scope=0, proto=4, flags=routing.RTNH_F_ONLINK,
             attrs={"RTA_TABLE": 100, "RTA_PRIORITY": 100, "RTA_GATEWAY": "10.147.17.1", "RTA_OIF": 3})
    parsed = routing.route_from_msg(gw, {3: "zt0"})
    assert routing.route_matches(route(via="10.147.17.1", dev="zt0", metric=100, onlink=True), parsed)
    multipath = msg(dst_len=8, table=254, type=1, scope=0, proto=3, attrs={"RTA_DST": "10.0.0.0", "RTA_MULTIPATH": [
        {"oif": 3, "flags": 0, "attrs": {"RTA_GATEWAY": "10.147.17.1"}},
        {"oif": 4, "flags": 0, "attrs": {"RTA_GATEWAY": "10.147.17.2"}}]})
    assert routing.route_from_msg(multipath, {3: "zt0"}).via == "multipath:10.147.17.1@zt0,10.147.17.2@4"
    assert routing.route_from_msg(dict(gw, flags=routing.RTM_F_CLONED), {}) is None
    assert routing.route_from_msg(dict(gw, family=128), {}) is None  # multicast routing


def test_route_requests_name_only_the_key_when_deleting():
    gw = route(via="10.147.17.1", dev="zt0", metric=100, onlink=True, table="100000")
    kind, op, header, attrs = routing.route_request(gw, "add", {"zt0": 7})
    assert (kind, op, header["table"], header["flags"], header["proto"]) == (
        "route", "add", routing.RT_TABLE_COMPAT, routing.RTNH_F_ONLINK, routing.PROTO_STATIC)
    assert dict(attrs) == {"RTA_TABLE": 100000, "RTA_PRIORITY": 100, "RTA_GATEWAY": "10.147.17.1", "RTA_OIF": 7}
    kind, op, header, attrs = routing.route_request(gw, "delete", {"zt0": 7})
    assert header == dict(family=socket.AF_INET, dst_len=0, table=routing.RT_TABLE_COMPAT, scope=255)
    assert dict(attrs) == {"RTA_TABLE": 100000, "RTA_PRIORITY": 100}


# ---------------------------------------------------------------- rules

def test_normalize_rule_and_fwmark():
    assert rule(fwmark="0x10/0xff", iif="eth0") == Rule(
        "ipv4", 100, "10.147.17.5/32", None, "eth0", None, 16, 255, False, "lookup", 100)
    assert rule(fwmark="5").fwmask == 0xffffffff
    assert rule(action="unreachable", table=None).table is None


@pytest.mark.parametrize("kw, message", [
    (dict(priority=None), r"rules\[0\].priority is required"),
    (dict(priority=0), r"rules\[0\].priority: 0 is out of range"),
    ({"from": "10.147.17.5/16"}, r"rules\[0\].from: .*host bits"),
    (dict(fwmark="mark"), r"rules\[0\].fwmark"),
    (dict(action="unreachable"), "looks up no table"),
    (dict(table=None), "table is required"),
    (dict(iif="eth 0"), r"rules\[0\].iif: 'eth 0' is not a valid interface name"),
])
def test_normalize_rule_rejects(kw, message):
    with pytest.raises(SpecError, match=message):
        rule(**kw)


def test_rule_from_msg_roundtrip():
    message = msg(dst_len=0, src_len=32, table=100, action=1, attrs={
        "FRA_TABLE": 100, "FRA_PRIORITY": 100, "FRA_SRC": "10.147.17.5"})
    assert routing.rule_from_msg(message) == rule()
    local = msg(dst_len=0, src_len=0, table=255, action=1, attrs={"FRA_TABLE": 255})
    assert routing.rule_from_msg(local).priority == 0
    refuse = msg(dst_len=24, src_len=0, table=0, action=7, flags=routing.FIB_RULE_INVERT,
                 attrs={"FRA_PRIORITY": 5, "FRA_DST": "198.51.100.0", "FRA_FWMARK": 3})
    assert routing.rule_from_msg(refuse) == Rule(
        "ipv4", 5, None, "198.51.100.0/24", None, None, 3, 0xffffffff, True, "unreachable", None)


def test_plan_rules_replace_shadowing_rule_and_exclusive():
    main = rule(priority=32766, table=254, **{"from": None})
    old_target = rule(table=200)
    stray = rule(priority=150, **{"from": "10.147.17.9"})
    assert routing.plan_rules([rule()], [], [main, old_target, stray]) == ([rule()], [old_target])
    assert routing.plan_rules([rule()], [], [main, rule(), stray], exclusive_tables=[100]) == ([], [stray])


def test_plan_rules_absent_pattern_without_priority():
    pattern = routing.normalize_rule({"from": "10.147.17.5", "table": "zerotier-egress"}, NAMES, "r",
                                     require_priority=False)
    current = [rule(), rule(priority=200), rule(priority=300, table=254)]
    assert routing.plan_rules([], [pattern], current) == ([], current[:2])


def test_rule_texts():
    assert routing.rule_show_text(rule(), TABLE_NAMES) == "100: from 10.147.17.5 lookup zerotier-egress"
    assert routing.rule_text(rule(fwmark="0x10/0xff", iif="eth0", to="10.0.0.0/8"), TABLE_NAMES) == \
        "pref 100 from 10.147.17.5 to 10.0.0.0/8 iif eth0 fwmark 0x10/0xff lookup zerotier-egress"
    prohibit = rule(action="prohibit", table=None, **{"from": None})
    assert routing.rule_show_text(prohibit, TABLE_NAMES) == "100: from all prohibit"
    assert routing.rule_show_text(prohibit._replace(invert=True), TABLE_NAMES) == "100: not from all prohibit"
    assert routing.rule_text(rule(table="main", **{"from": None}, iif="cube-router")) == \
        "pref 100 iif cube-router lookup main"


def test_rule_requests():
    kind, op, header, attrs = routing.rule_request(rule(fwmark="0x10/0xff", oif="zt0"), "add")
    assert (kind, op, header["src_len"], header["table"], header["action"]) == ("rule", "add", 32, 100, 1)
    assert dict(attrs) == {"FRA_PRIORITY": 100, "FRA_TABLE": 100, "FRA_SRC": "10.147.17.5", "FRA_OIFNAME": "zt0",
                           "FRA_FWMARK": 16, "FRA_FWMASK": 255}
    header, attrs = routing.rule_request(rule(action="unreachable", table=None), "delete")[2:]
    assert header["action"] == 7 and "FRA_TABLE" not in dict(attrs)


# ---------------------------------------------------------------- the boot-time file

def test_batch_lines_replace_routes_and_name_rules_by_selector():
    v6_rule = routing.normalize_rule(dict(priority=200, fwmark="0x10/0xff", iif="uplink", table="zerotier-egress",
                                          family="ipv6"), NAMES, "rules[1]")
    assert routing.batch_lines([route(type="unreachable", metric=4278198272), route(type="throw", dst="10.42.0.0/16")],
                               [rule(), v6_rule]) == [
        "route replace unreachable default table 100 proto static metric 4278198272",
        "route replace throw 10.42.0.0/16 table 100 proto static",
        "rule pref 100 from 10.147.17.5 lookup 100",
        "rule -6 pref 200 iif uplink fwmark 0x10/0xff lookup 100",
    ]


# ---------------------------------------------------------------- the atomic writer

@pytest.fixture
def module(monkeypatch):
    """A real AnsibleModule (its atomic_move is what routing.atomic_write uses)."""
    monkeypatch.setattr(basic, "_ANSIBLE_ARGS", json.dumps({"ANSIBLE_MODULE_ARGS": {}}).encode())
    # ansible-core 2.19 reads a serialization profile here; 2.18 has none.
    monkeypatch.setattr(basic, "_ANSIBLE_PROFILE", "legacy", raising=False)
    return basic.AnsibleModule(argument_spec={})


def test_atomic_write_sets_the_mode_and_creates_the_directory(module, tmp_path):
    path = tmp_path / "new" / "egress-routing.ip"
    routing.atomic_write(module, str(path), "route replace ...\n", 0o640)
    assert path.read_text() == "route replace ...\n" and routing.file_mode(str(path)) == 0o640
    routing.atomic_write(module, str(path), "again\n", 0o644)
    assert path.read_text() == "again\n" and routing.file_mode(str(path)) == 0o644
    assert os.listdir(path.parent) == ["egress-routing.ip"]  # no temporary file left
    with pytest.raises(OSError, match="cannot write"):
        routing.atomic_write(module, str(path / "below-a-file"), "x", 0o644)
