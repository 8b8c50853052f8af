"""Benchmark (prints numbers, asserts nothing): policy_routing with 1,000 routes and 100 rules in one
module call against the same state applied with ``ip`` commands in a shell loop, in a network namespace.

    python tests/bench/policy_routing_bench.py [--routes 1000] [--rules 100] [--repeat 3]

The module is run as Ansible runs it (a Python process reading its arguments file, under
LITEBOXD_MODULE_PYTHON when set), so its times include interpreter start-up. The floor is what any
module run costs before it does anything: that interpreter starting and importing AnsibleModule.
The ip loop runs in one shell inside the namespace (one ``ip`` process per command, as a hand-written
script would); its re-run uses ``ip route replace`` and checks each rule with ``ip rule show`` before
adding it, the usual way to make such a script re-runnable. Each figure is the median of --repeat runs.
"""
import argparse
import pathlib
import statistics
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from tests.lib.collection import install_on_path  # noqa: E402
from tests.lib.modules import MODULE_PYTHON, run_module  # noqa: E402
from tests.lib.netns import Netns, veth  # noqa: E402
from tests.lib.timing import timed  # noqa: E402

GATEWAY = "10.200.0.2"


def desired_state(n_routes, n_rules):
    tables = [dict(name="bench%d" % i, id=1001 + i, exclusive=True) for i in range(n_rules)]
    rules = [{"priority": 1000 + i, "from": "10.100.%d.0/24" % i, "table": "bench%d" % i} for i in range(n_rules)]
    routes = []
    for j in range(n_routes):
        routes.append(dict(dst="172.16.%d.%d/32" % (j // 256, j % 256), via=GATEWAY, dev="v0",
                           table="bench%d" % (j % n_rules), metric=10))
    return dict(tables=tables, rules=rules, routes=routes)


def ip_script(state, rerun):
    ids = dict((t["name"], t["id"]) for t in state["tables"])
    lines = ["set -e"]
    verb = "replace" if rerun else "add"
    for r in state["routes"]:
        lines.append("ip route %s %s via %s dev %s table %d metric %d"
                     % (verb, r["dst"], r["via"], r["dev"], ids[r["table"]], r["metric"]))
    for rule in state["rules"]:
        selector = "priority %d from %s lookup %d" % (rule["priority"], rule["from"], ids[rule["table"]])
        if rerun:
            lines.append('[ -n "$(ip rule show %s)" ] || ip rule add %s' % (selector, selector))
        else:
            lines.append("ip rule add %s" % selector)
    return "\n".join(lines) + "\n"


def fresh_node():
    node, peer = Netns("bench"), Netns("bench")
    veth(node, "v0", peer, "v0")
    node.ip("addr add 10.200.0.1/16 dev v0")
    return node, peer


def module_runs(state):
    """First apply and no-change re-run of the module on a fresh node; the rules it made."""
    with tempfile.TemporaryDirectory() as rt_dir:
        node, peer = fresh_node()
        try:
            module_args = dict(state, rt_tables_dir=rt_dir)
            first, result = timed(lambda: run_module("policy_routing", module_args, netns=node.name, timeout=600))
            assert result["changed"] and len(result["routes"]["added"]) == len(state["routes"])
            again, result = timed(lambda: run_module("policy_routing", module_args, netns=node.name, timeout=600))
            assert not result["changed"]
            rules = len([r for r in node.ip_json("-4 rule show") if 1000 <= r["priority"] < 2000])
        finally:
            node.close()
            peer.close()
    return first, again, rules


def ip_loop_runs(state):
    node, peer = fresh_node()
    try:
        first, _result = timed(lambda: node.run(["sh", "-c", ip_script(state, rerun=False)]))
        again, _result = timed(lambda: node.run(["sh", "-c", ip_script(state, rerun=True)]))
        rules = len([r for r in node.ip_json("-4 rule show") if 1000 <= r["priority"] < 2000])
    finally:
        node.close()
        peer.close()
    return first, again, rules


def floor_run():
    node, peer = fresh_node()
    try:
        return timed(lambda: node.run([MODULE_PYTHON, "-c", "from ansible.module_utils.basic import AnsibleModule"]))[0]
    finally:
        node.close()
        peer.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routes", type=int, default=1000)
    parser.add_argument("--rules", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    install_on_path()
    state = desired_state(args.routes, args.rules)

    runs = []
    for _round in range(args.repeat):  # alternating, so a busy moment hits all of them alike
        module_first, module_again, module_rules = module_runs(state)
        ip_first, ip_again, ip_rules = ip_loop_runs(state)
        assert module_rules == ip_rules == args.rules
        runs.append((module_first, module_again, ip_first, ip_again, floor_run()))
    first, again, ip_first, ip_again, floor = [statistics.median(column) for column in zip(*runs)]

    print("policy_routing benchmark: %d routes in %d tables, %d rules, one call (netns), %s, median of %d"
          % (args.routes, args.rules, args.rules, MODULE_PYTHON, args.repeat))
    print("%-48s %8s" % ("", "seconds"))
    print("%-48s %8.2f" % ("policy_routing module, first apply", first))
    print("%-48s %8.2f" % ("policy_routing module, idempotent re-run", again))
    print("%-48s %8.2f" % ("ip commands in a shell loop, first apply", ip_first))
    print("%-48s %8.2f" % ("ip loop re-run (replace, rule show || add)", ip_again))
    print("%-48s %8.2f" % ("floor: interpreter start + AnsibleModule import", floor))
    print("ratio ip loop / module: first apply %.1fx, re-run %.1fx" % (ip_first / first, ip_again / again))


if __name__ == "__main__":
    main()
