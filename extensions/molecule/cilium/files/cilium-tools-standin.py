#!/usr/bin/python3
# STAND-IN for the Cilium CLI, Helm and `k3s kubectl`, used only by the liteboxd Molecule scenario
# "cilium". It is NOT Cilium, Helm or kubectl: none of them can be downloaded or run here. Installed
# three times (as cilium, helm and k3s), it records every call (argv, KUBECONFIG, the values file it
# was given) to /var/log/cilium-standin/calls and keeps the "release" the way Helm would (one
# release, shared by the CLI and Helm) in /var/lib/cilium-standin/release.json, so the role sees
# "installed" after an install and can choose install or upgrade.
import json
import os
import pathlib
import sys

CALLS = pathlib.Path("/var/log/cilium-standin/calls")
RELEASE = pathlib.Path("/var/lib/cilium-standin/release.json")
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
    if release:
        print("cilium image (running): %s" % release["version"])
    else:
        print("cilium image (running): unknown. Unable to obtain cilium version. Reason: release: not found")
elif tool == "helm" and command == "list":
    print(json.dumps([{"name": "cilium", "namespace": option("--namespace"), "status": "deployed",
                       "chart": "cilium-%s" % release["version"], "app_version": release["version"]}]
                     if release else []))
elif tool in ("cilium", "helm") and command in ("install", "upgrade"):
    if (command == "install") == bool(release):
        print("Error: release %s" % ("exists" if release else "not found"), file=sys.stderr)
        sys.exit(1)
    RELEASE.parent.mkdir(parents=True, exist_ok=True)
    RELEASE.write_text(json.dumps({"version": option("--version"), "by": tool}))
elif tool in ("cilium", "helm") and command == "uninstall":
    RELEASE.unlink()
elif tool == "k3s" and command == "kubectl":
    pass
else:
    print("stand-in %s: unsupported %r" % (tool, args), file=sys.stderr)
    sys.exit(2)
