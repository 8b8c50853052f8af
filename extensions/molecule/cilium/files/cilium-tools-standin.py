#!/usr/bin/python3
# STAND-IN for the Cilium CLI, Helm and `k3s kubectl`, used only by the liteboxd Molecule scenario
# "cilium". It is NOT Cilium, Helm or kubectl: none of them can be downloaded or run here. Installed
# three times (as cilium, helm and k3s), it records every call (argv, KUBECONFIG, the values file it
# was given) to /var/log/cilium-standin/calls and keeps the "release" the way Helm would (one
# release, shared by the CLI and Helm) in /var/lib/cilium-standin/release.json, so the role sees
# "installed" after an install and can choose install or upgrade. Like Helm, a failed install or
# upgrade leaves the release "failed" with that attempt's chart version while the agents keep
# running the version before it; /var/lib/cilium-standin/fail-next makes the next one fail.
import json
import os
import pathlib
import sys

CALLS = pathlib.Path("/var/log/cilium-standin/calls")
RELEASE = pathlib.Path("/var/lib/cilium-standin/release.json")
FAIL_NEXT = pathlib.Path("/var/lib/cilium-standin/fail-next")
tool = pathlib.Path(sys.argv[0]).name
args = sys.argv[1:]


def option(name):
    return args[args.index(name) + 1] if name in args else None


values_file = option("--values")
CALLS.parent.mkdir(parents=True, exist_ok=True)
with CALLS.open("a") as calls:
    calls.write(json.dumps({
        "tool": tool,
        "argv": sys.argv,
        "kubeconfig": os.environ.get("KUBECONFIG"),
        "values": pathlib.Path(values_file).read_text() if values_file else None,
    }) + "\n")

release = json.loads(RELEASE.read_text()) if RELEASE.exists() else None
command = args[0] if args else ""
if tool == "cilium" and command == "version":
    print("cilium-cli: v0.18.9 (stand-in)")
    if release and release.get("running"):
        print("cilium image (running): %s" % release["running"])
    else:
        print("cilium image (running): unknown. Unable to obtain cilium version. Reason: release: not found")
elif tool == "helm" and command == "list":
    # Without --all, Helm lists only deployed and failed releases.
    listed = release and ("--all" in args or release["status"] in ("deployed", "failed"))
    print(json.dumps([{"name": "cilium", "namespace": option("--namespace"), "status": release["status"],
                       "chart": "cilium-%s" % release["version"], "app_version": release["version"]}]
                     if listed else []))
elif tool in ("cilium", "helm") and command in ("install", "upgrade"):
    if (command == "install") == bool(release):
        print("Error: release %s" % ("exists" if release else "not found"), file=sys.stderr)
        sys.exit(1)
    if release and release["status"].startswith("pending-"):
        print("Error: UPGRADE FAILED: another operation (install/upgrade/rollback) is in progress", file=sys.stderr)
        sys.exit(1)
    failing = FAIL_NEXT.exists()
    RELEASE.parent.mkdir(parents=True, exist_ok=True)
    RELEASE.write_text(json.dumps({"version": option("--version"), "by": tool,
                                   "status": "failed" if failing else "deployed",
                                   "running": (release or {}).get("running") if failing else option("--version")}))
    if failing:
        FAIL_NEXT.unlink()
        print("Error: %s FAILED: context deadline exceeded (stand-in)" % command.upper(), file=sys.stderr)
        sys.exit(1)
elif tool in ("cilium", "helm") and command == "uninstall":
    RELEASE.unlink()
elif tool == "k3s" and command == "kubectl":
    pass
else:
    print("stand-in %s: unsupported %r" % (tool, args), file=sys.stderr)
    sys.exit(2)
