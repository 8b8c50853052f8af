"""policy_routing against a real kernel, inside throwaway network namespaces."""
import re

import pytest

from tests.lib.modules import run_module
from tests.lib.netns import Netns, veth

EGRESS_IP = "10.147.17.5"
EXIT_IP = "10.147.17.1"
FAIL_CLOSED_METRIC = 4278198272


@pytest.fixture
def node():
    """The egress node: tunnel ``tun0`` to an exit namespace, ``uplink`` to another."""
    with Netns() as host, Netns() as exit_ns, Netns() as inet:
        for ns in (host, exit_ns, inet):
            # No IPv6 link-local addresses appearing later: before/after states stay comparable.
            ns.sysctl("net.ipv6.conf.default.addr_gen_mode", 1)
        veth(host, "tun0", exit_ns, "tun0")
        veth(host, "uplink", inet, "uplink")
        host.ip("addr add %s/24 dev tun0" % EGRESS_IP)
        host.ip("addr add 192.0.2.2/24 dev uplink")
        yield host


@pytest.fixture
def rt_dir(tmp_path):
    path = tmp_path / "rt_tables.d"
    path.mkdir()
    return path


def egress_args(rt_dir, **overrides):
    args = dict(
        rt_tables_dir=str(rt_dir),
        tables=[dict(name="zerotier-egress", id=100, exclusive=True)],
        rules=[{"priority": 100, "from": EGRESS_IP, "table": "zerotier-egress"}],
        routes=[
            dict(dst="default", via=EXIT_IP, dev="tun0", metric=100, table="zerotier-egress"),
            dict(dst="default", type="unreachable", metric=FAIL_CLOSED_METRIC, table="zerotier-egress"),
            dict(dst="10.42.0.0/16", type="throw", table="zerotier-egress"),
            dict(dst="10.43.0.0/16", type="throw", table="zerotier-egress"),
        ],
    )
    args.update(overrides)
    return args


def table_routes(ns, table="100"):
    return sorted((r.get("type", "unicast"), r["dst"], r.get("gateway"), r.get("dev"), r.get("metric", 0))
                  for r in ns.ip_json("-4 route show table %s" % table))


def rules(ns):
    return [(r["priority"], r.get("src"), r["table"]) for r in ns.ip_json("-4 rule show")]


def test_check_mode_predicts_then_apply_then_idempotent(node, rt_dir):
    before = node.routing_state()
    predicted = run_module("policy_routing", egress_args(rt_dir), check=True, diff=True, netns=node.name)
    assert predicted["changed"]
    assert node.routing_state() == before, "check mode changed the kernel"
    assert list(rt_dir.iterdir()) == [], "check mode wrote a table file"

    applied = run_module("policy_routing", egress_args(rt_dir), diff=True, netns=node.name)
    for key in ("rules", "routes", "tables"):
        assert applied[key] == predicted[key]
    assert applied["diff"] == predicted["diff"]
    assert sorted(applied["routes"]["added"]) == sorted([
        "default via 10.147.17.1 dev tun0 table zerotier-egress metric 100",
        "unreachable default table zerotier-egress metric 4278198272",
        "throw 10.42.0.0/16 table zerotier-egress",
        "throw 10.43.0.0/16 table zerotier-egress",
    ])
    assert applied["rules"]["added"] == ["100: from 10.147.17.5 lookup zerotier-egress"]
    assert "100: from 10.147.17.5 lookup zerotier-egress" in applied["diff"]["after"]
    assert "100: from 10.147.17.5 lookup zerotier-egress" not in applied["diff"]["before"]

    assert (rt_dir / "zerotier-egress.conf").read_text().splitlines()[-1] == "100 zerotier-egress"
    assert (100, EGRESS_IP, "100") in rules(node)
    assert table_routes(node) == sorted([
        ("unicast", "default", EXIT_IP, "tun0", 100),
        ("unreachable", "default", None, None, FAIL_CLOSED_METRIC),
        ("throw", "10.42.0.0/16", None, None, 0),
        ("throw", "10.43.0.0/16", None, None, 0),
    ])

    state = node.routing_state()
    again = run_module("policy_routing", egress_args(rt_dir), diff=True, netns=node.name)
    assert not again["changed"]
    assert again["diff"]["before"] == again["diff"]["after"]
    assert node.routing_state() == state
    assert not run_module("policy_routing", egress_args(rt_dir), check=True, netns=node.name)["changed"]


def test_changed_gateway_is_replaced_in_place(node, rt_dir):
    run_module("policy_routing", egress_args(rt_dir), netns=node.name)
    args = egress_args(rt_dir)
    args["routes"][0]["via"] = "10.147.17.2"
    result = run_module("policy_routing", args, netns=node.name)
    assert result["routes"]["changed"] == [dict(
        before="default via 10.147.17.1 dev tun0 table zerotier-egress metric 100",
        after="default via 10.147.17.2 dev tun0 table zerotier-egress metric 100")]
    assert result["routes"]["added"] == result["routes"]["removed"] == []
    assert ("unicast", "default", "10.147.17.2", "tun0", 100) in table_routes(node)


def test_exclusive_removes_undeclared_in_that_table_only(node, rt_dir):
    run_module("policy_routing", egress_args(rt_dir), netns=node.name)
    node.ip("route add 10.99.0.0/16 via %s table 100" % EXIT_IP)
    node.ip("route add 10.98.0.0/16 via %s table 200" % EXIT_IP)
    node.ip("rule add priority 150 from 10.147.17.9 lookup 100")
    node.ip("rule add priority 160 from 10.147.17.9 lookup 200")

    result = run_module("policy_routing", egress_args(rt_dir), diff=True, netns=node.name)
    assert result["routes"]["removed"] == ["10.99.0.0/16 via 10.147.17.1 dev tun0 table zerotier-egress"]
    assert result["rules"]["removed"] == ["150: from 10.147.17.9 lookup zerotier-egress"]
    assert "10.99.0.0/16" in result["diff"]["before"] and "10.99.0.0/16" not in result["diff"]["after"]
    assert ("unicast", "10.98.0.0/16", EXIT_IP, "tun0", 0) in table_routes(node, "200")
    assert (160, "10.147.17.9", "200") in rules(node)
    assert (150, "10.147.17.9", "100") not in rules(node)

    # Not exclusive: an undeclared route stays.
    node.ip("route add 10.99.0.0/16 via %s table 100" % EXIT_IP)
    args = egress_args(rt_dir, tables=[dict(name="zerotier-egress", id=100)])
    assert not run_module("policy_routing", args, netns=node.name)["changed"]


def test_rule_with_same_selector_and_other_table_is_replaced(node, rt_dir):
    node.ip("rule add priority 100 from %s lookup 200" % EGRESS_IP)
    result = run_module("policy_routing", egress_args(rt_dir), netns=node.name)
    assert result["rules"]["removed"] == ["100: from 10.147.17.5 lookup 200"]
    assert [r for r in rules(node) if r[0] == 100] == [(100, EGRESS_IP, "100")]


def test_absent_items_and_absent_table_are_the_seed_rollback(node, rt_dir):
    pristine = node.routing_state()
    run_module("policy_routing", egress_args(rt_dir), netns=node.name)

    one = run_module("policy_routing", dict(rt_tables_dir=str(rt_dir), routes=[
        dict(dst="10.43.0.0/16", type="throw", table="zerotier-egress", state="absent")]), netns=node.name)
    assert one["routes"]["removed"] == ["throw 10.43.0.0/16 table zerotier-egress"]
    assert ("throw", "10.43.0.0/16", None, None, 0) not in table_routes(node)

    rollback = dict(rt_tables_dir=str(rt_dir),
                    rules=[{"from": EGRESS_IP, "table": "zerotier-egress", "state": "absent"}],
                    tables=[dict(name="zerotier-egress", state="absent")])
    predicted = run_module("policy_routing", rollback, check=True, netns=node.name)
    assert (rt_dir / "zerotier-egress.conf").exists()
    done = run_module("policy_routing", rollback, netns=node.name)
    assert done["rules"] == predicted["rules"] and done["routes"] == predicted["routes"]
    assert done["tables"]["removed"] == [str(rt_dir / "zerotier-egress.conf")]
    assert node.routing_state() == pristine
    assert list(rt_dir.iterdir()) == []
    assert not run_module("policy_routing", rollback, netns=node.name)["changed"]


def test_ipv6_routes_and_fwmark_rules(node, rt_dir):
    node.ip("-6 addr add fd00:147::5/64 dev tun0 nodad")
    args = dict(rt_tables_dir=str(rt_dir), tables=[dict(name="v6egress", id=106)],
                rules=[dict(priority=200, fwmark="0x10/0xff", iif="uplink", table="v6egress", family="ipv6"),
                       dict(priority=201, to="198.51.100.0/24", action="unreachable")],
                routes=[dict(dst="default", family="ipv6", via="fd00:147::1", dev="tun0", table="v6egress"),
                        dict(dst="2001:db8::/32", type="blackhole", table="v6egress")])
    first = run_module("policy_routing", args, netns=node.name)
    assert first["changed"]
    assert not run_module("policy_routing", args, netns=node.name)["changed"]
    v6 = node.ip_json("-6 rule show")
    assert {"priority": 200, "src": "all", "iif": "uplink", "fwmark": "0x10", "fwmask": "0xff",
            "table": "106"}.items() <= \
        [r for r in v6 if r["priority"] == 200][0].items()
    assert [r for r in node.ip_json("-4 rule show") if r["priority"] == 201][0]["action"] == "unreachable"
    assert {r["dst"] for r in node.ip_json("-6 route show table 106")} == {"default", "2001:db8::/32"}


BAD_INPUTS = [
    ("via", lambda a: a["routes"][0].update(via="10.147.17.300"), r"routes\[0\]\.via: '10.147.17.300' is not a valid IP"),
    ("dst host bits", lambda a: a["routes"][2].update(dst="10.42.0.1/16"), r"routes\[2\]\.dst: 10.42.0.1/16 has host bits"),
    ("dst malformed", lambda a: a["routes"][3].update(dst="10.43.0.0/40"), r"routes\[3\]\.dst: '10.43.0.0/40' is not a valid"),
    ("rule from", lambda a: a["rules"][0].update({"from": "10.147.17"}), r"rules\[0\]\.from: '10.147.17' is not a valid"),
    ("unknown device", lambda a: a["routes"][0].update(dev="zt404"), r"routes\[0\]\.dev: unknown device zt404"),
    ("src not local", lambda a: a["routes"][0].update(src="10.147.17.77"), r"routes\[0\]\.src: 10.147.17.77 is not an address"),
    ("unknown table", lambda a: a["routes"][1].update(table="nosuch"), r"routes\[1\]\.table: unknown table 'nosuch'"),
    ("priority clash", lambda a: a["rules"].append({"priority": 100, "from": EGRESS_IP, "table": "main"}),
     r"rules\[1\]: priority clash with rules\[0\]"),
    ("duplicate route", lambda a: a["routes"].append(dict(dst="10.42.0.0/16", type="blackhole", table="zerotier-egress")),
     r"routes\[4\]: same destination, table and metric as routes\[2\]"),
    ("table without id", lambda a: a["tables"][0].pop("id"), r"tables\[0\]\.id is required"),
    ("reserved id", lambda a: a["tables"][0].update(id=254), r"tables\[0\]: table zerotier-egress/254 is reserved"),
]


@pytest.mark.parametrize("mutate, message", [(m, msg) for _n, m, msg in BAD_INPUTS], ids=[n for n, _m, _msg in BAD_INPUTS])
def test_bad_input_fails_before_any_change(node, rt_dir, mutate, message):
    args = egress_args(rt_dir)
    mutate(args)
    before = node.routing_state()
    result = run_module("policy_routing", args, netns=node.name, expect_fail=True)
    assert re.search(message, result["msg"]), result["msg"]
    assert node.routing_state() == before
    assert list(rt_dir.iterdir()) == []


@pytest.mark.parametrize("existing, message", [
    ("100 other-name\n", r"tables\[0\]: table id clash: id 100 is already mapped to other-name in .*/legacy.conf"),
    ("101 zerotier-egress\n", r"tables\[0\]: table id clash: zerotier-egress is already mapped to id 101"),
])
def test_table_id_clash_fails_before_any_change(node, rt_dir, existing, message):
    (rt_dir / "legacy.conf").write_text(existing)
    before = node.routing_state()
    result = run_module("policy_routing", egress_args(rt_dir), netns=node.name, expect_fail=True)
    assert re.search(message, result["msg"]), result["msg"]
    assert node.routing_state() == before
    assert sorted(p.name for p in rt_dir.iterdir()) == ["legacy.conf"]


def test_kernel_refusal_undoes_earlier_changes(node, rt_dir):
    """A gateway outside every connected subnet passes validation but the kernel refuses it:
    the routes and files already written in this run are undone."""
    args = egress_args(rt_dir)
    args["routes"].append(dict(dst="203.0.113.0/24", via="198.51.100.1", dev="tun0", table="zerotier-egress"))
    before = node.routing_state()
    result = run_module("policy_routing", args, netns=node.name, expect_fail=True)
    assert "routes[4]" in result["msg"] and "the kernel refused it" in result["msg"]
    assert "the changes made before it were undone" in result["msg"]
    assert node.routing_state() == before
    assert list(rt_dir.iterdir()) == []


def test_batch_file_is_what_the_module_applied_written_atomically_and_mode_checked(node, rt_dir, tmp_path):
    batch = tmp_path / "boot" / "egress-routing.ip"
    args = egress_args(rt_dir, batch_file=str(batch))
    predicted = run_module("policy_routing", args, check=True, diff=True, netns=node.name)
    assert predicted["batch_file"] == dict(path=str(batch), changed=True, written=False)
    assert not batch.parent.exists(), "check mode wrote the batch file"
    assert "# %s\n" % batch in predicted["diff"]["after"] and str(batch) not in predicted["diff"]["before"]

    applied = run_module("policy_routing", args, netns=node.name)
    assert applied["batch_file"] == dict(path=str(batch), changed=True, written=True)
    assert applied["tables"]["written"] == [str(rt_dir / "zerotier-egress.conf")]  # the batch file is reported apart
    assert oct(batch.stat().st_mode & 0o777) == "0o644"
    lines = [line for line in batch.read_text().splitlines() if not line.startswith("#")]
    assert lines == [
        "route replace default via 10.147.17.1 dev tun0 table 100 proto static metric 100",
        "route replace unreachable default table 100 proto static metric 4278198272",
        "route replace throw 10.42.0.0/16 table 100 proto static",
        "route replace throw 10.43.0.0/16 table 100 proto static",
        "rule pref 100 from 10.147.17.5 lookup 100",
    ]
    assert "100 = zerotier-egress" in batch.read_text()
    # Each batch line, run by ip, gives back exactly what the module applied.
    state = node.routing_state()
    node.ip("rule del priority 100")
    node.ip("route flush table 100")
    node.run(["ip", "-batch", "-"], input="\n".join(line for line in lines if line.startswith("route ")) + "\n")
    node.ip("rule add " + lines[-1].split(" ", 1)[1])
    assert node.routing_state() == state

    batch.chmod(0o600)  # a mode that drifted is put back, and reported
    fixed = run_module("policy_routing", args, netns=node.name)
    assert fixed["changed"] and fixed["batch_file"]["written"] and oct(batch.stat().st_mode & 0o777) == "0o644"
    assert not run_module("policy_routing", args, netns=node.name)["changed"]
