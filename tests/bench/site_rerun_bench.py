"""Re-run benchmark: how long `playbooks/site.yml` takes on the converged local lab.

A script, not a test: it prints numbers. It runs site.yml on the lab `scripts/lab up` built (over
the connection the lab inventory names, SSH), with the JSON callback (ansible.posix.json) so every
task's wall time is known, and prints per run: the total seconds, the changed count per host (a
converged lab changes nothing), and the slowest tasks. `--without NAME` also prints the total
minus the tasks of that name (what a run without them would take, e.g. a task another change
removes). `--connection podman` runs the same playbook over `podman exec` instead (the lab's
connection before it ran over SSH), so the two can be compared in one session; `--alternate`
alternates both.

    bash -c 'source scripts/env.sh && python tests/bench/site_rerun_bench.py [--runs 3] [--top 15]'
"""
import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.lib.collection import install_on_path  # noqa: E402

LAB_INVENTORY = REPO / "inventories" / "lab" / "hosts.yml"


def seconds(duration):
    """Wall time of a task or play from the JSON callback's ISO start/end stamps."""
    if not duration.get("end"):
        return 0.0
    start = datetime.fromisoformat(duration["start"].rstrip("Z"))
    end = datetime.fromisoformat(duration["end"].rstrip("Z"))
    return (end - start).total_seconds()


def podman_inventory(directory):
    """An inventory source that puts every lab host on `podman exec` (host vars beat group_vars)."""
    listed = subprocess.run(["ansible-inventory", "-i", str(LAB_INVENTORY), "--list"], check=True,
                            capture_output=True, text=True, cwd=REPO)
    hosts = json.loads(listed.stdout)["_meta"]["hostvars"]
    path = pathlib.Path(directory) / "podman.yml"
    path.write_text(json.dumps({"all": {"hosts": {
        name: {"ansible_connection": "containers.podman.podman", "ansible_user": "root", "ansible_become": False}
        for name in hosts if name != "localhost"}}}))
    return path


def run_site(extra_inventory, check):
    """Run site.yml once; return (wall seconds, parsed JSON callback output)."""
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_COLLECTIONS_PATH=install_on_path())
    argv = ["ansible-playbook", "-i", str(LAB_INVENTORY)]
    if extra_inventory:
        argv += ["-i", str(extra_inventory)]
    argv += ["playbooks/site.yml"] + (["--check", "--diff"] if check else [])
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env=env, check=False)
    wall = time.perf_counter() - start
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        sys.exit(f"site.yml printed no JSON (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    if done.returncode != 0:
        sys.exit(f"site.yml failed (exit {done.returncode}): {json.dumps(report['stats'])}\n{done.stderr[-3000:]}")
    return wall, report


def task_times(report):
    """(seconds, play, task, hosts) for every task that ran, slowest first."""
    rows = []
    for play in report["plays"]:
        for task in play["tasks"]:
            ran = [host for host, result in task["hosts"].items() if not result.get("skipped")]
            if ran:
                rows.append((seconds(task["task"]["duration"]), play["play"]["name"], task["task"]["name"], ran))
    return sorted(rows, reverse=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1, help="runs per connection (default 1)")
    parser.add_argument("--top", type=int, default=12, help="how many of the slowest tasks to print")
    parser.add_argument("--without", action="append", default=[], metavar="TASK",
                        help="also print the total without the tasks of this name (repeatable)")
    parser.add_argument("--connection", choices=["inventory", "podman"], default="inventory",
                        help="the lab inventory's connection (SSH) or podman exec")
    parser.add_argument("--alternate", action="store_true", help="alternate the inventory's connection and podman exec")
    parser.add_argument("--check", action="store_true", help="time the --check --diff run instead")
    args = parser.parse_args()

    connections = ["inventory", "podman"] if args.alternate else [args.connection]
    totals = {connection: [] for connection in connections}
    with tempfile.TemporaryDirectory() as scratch:
        extra = {"inventory": None, "podman": podman_inventory(scratch) if "podman" in connections else None}
        for run in range(1, args.runs + 1):
            for connection in connections:
                wall, report = run_site(extra[connection], args.check)
                tasks = task_times(report)
                changed = {host: stats["changed"] for host, stats in report["stats"].items()}
                label = "SSH (the lab inventory)" if connection == "inventory" else "podman exec"
                print(f"\nrun {run}, {label}: site.yml{' --check' if args.check else ''} took {wall:.1f} s, "
                      f"{len(tasks)} tasks ran, {sum(len(t[3]) for t in tasks)} task-host results")
                print("  changed per host: " + ", ".join(f"{host}={count}" for host, count in sorted(changed.items())))
                if any(changed.values()):
                    print("  NOTE: the lab is not converged (a change above): the time is not a re-run's")
                for name in args.without:
                    spent = sum(t[0] for t in tasks if t[2] == name or t[2].endswith(" : " + name))
                    print(f"  without '{name}' ({spent:.1f} s): {wall - spent:.1f} s")
                print(f"  slowest {args.top} tasks (wall s, hosts):")
                for spent, play, task, hosts in tasks[:args.top]:
                    print(f"    {spent:6.2f}  {play} | {task}  [{len(hosts)}]")
                totals[connection].append(wall)
    print("\nsummary (s): " + "; ".join(
        f"{'SSH' if connection == 'inventory' else 'podman exec'} median {statistics.median(values):.1f} "
        f"range {min(values):.1f}-{max(values):.1f} over {len(values)}"
        for connection, values in totals.items()))
    if args.alternate:
        print(f"ratio podman exec / SSH (medians): "
              f"{statistics.median(totals['podman']) / statistics.median(totals['inventory']):.2f}")


if __name__ == "__main__":
    main()
