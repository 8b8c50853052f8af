#!/usr/bin/python3
# STAND-IN for the k3s binary, used only by the liteboxd Molecule scenario "k3s". It is NOT K3s:
# K3s cannot be downloaded here. It answers --version, records every call (argv, K3S_/INSTALL_
# environment, the config.yaml it would read) to /var/log/k3s-standin/k3s.calls, writes the files a
# K3s server writes (node token, kubeconfig) and then sleeps so systemd sees a running service.
import json
import os
import pathlib
import sys
import time

VERSION = "@VERSION@"
CALLS = pathlib.Path("/var/log/k3s-standin/k3s.calls")
CONFIG = pathlib.Path("/etc/rancher/k3s/config.yaml")
KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- name: default
  cluster:
    certificate-authority-data: U1RBTkQtSU4gQ0E=
    server: https://127.0.0.1:6443
contexts:
- name: default
  context: {cluster: default, user: default}
current-context: default
users:
- name: default
  user:
    client-certificate-data: U1RBTkQtSU4gQ0VSVA==
    client-key-data: U1RBTkQtSU4gS0VZ
"""

args = sys.argv[1:]
if args[:1] == ["--version"]:
    print("k3s version %s (stand-in)" % VERSION)
    sys.exit(0)
if args[:1] not in (["server"], ["agent"]):
    print("k3s stand-in: unsupported command %r" % (args,), file=sys.stderr)
    sys.exit(2)

CALLS.parent.mkdir(parents=True, exist_ok=True)
with CALLS.open("a") as calls:
    calls.write(json.dumps({
        "argv": sys.argv,
        "version": VERSION,
        "time": time.time(),
        "env": {k: v for k, v in os.environ.items() if k.startswith(("K3S_", "INSTALL_K3S_"))},
        "config": CONFIG.read_text() if CONFIG.exists() else None,
    }) + "\n")

if args[0] == "server":
    token = pathlib.Path("/var/lib/rancher/k3s/server/node-token")
    if not token.exists():
        token.parent.mkdir(parents=True, exist_ok=True)
        token.write_text("K10standin%s::server:standin\n" % os.urandom(8).hex())
        token.chmod(0o600)
    pathlib.Path("/etc/rancher/k3s/k3s.yaml").write_text(KUBECONFIG)
while True:
    time.sleep(3600)
