"""The k3s role's rolling restart (tasks/wait.yml runs tasks/restart.yml per changed node) through
ansible-playbook against a real kube-apiserver: the nodes whose files changed restart one at a time,
the servers first, and the next one restarts only once the previous one's Node has reported after its
restart. Also: node_ready rides out an API server that does not answer (the one restarting).

The hosts are inventory hosts on a local connection, each with the ``k3s_restart`` fact node.yml sets
(here from the inventory, with a service name per host so the restarts can be told apart). A STAND-IN
``systemctl``, first on PATH, records each restart; the test plays the kubelets: a restarted node
reports Ready with a fresh heartbeat a moment later, and a node that does not come back never does.
Before the restarts every Node is Ready with an old heartbeat, as a running cluster's Nodes are.
"""
import datetime
import json
import pathlib
import socket
import struct
import sys
import threading
import time
import urllib.parse

import pytest
import yaml
from kubernetes import client

from tests.integration.test_k3s_kubeconfig import k3s_style_kubeconfig
from tests.integration.test_k3s_wait import register_node, run_playbook, task_results
from tests.lib.modules import run_module

SERVERS = ["lab-egress", "lab-sandbox-inet", "lab-rae-gw"]
AGENT, AGENT_NODE = "lab-sandbox-noinet", "sandbox-agent-1"
# lab-sandbox-inet's files did not change: it is not restarted.
RESTARTED = {"lab-egress": "lab-egress", "lab-rae-gw": "lab-rae-gw", AGENT: AGENT_NODE}
NODE_NAMES = {"lab-egress": "lab-egress", "lab-sandbox-inet": "lab-sandbox-inet", "lab-rae-gw": "lab-rae-gw",
              AGENT: AGENT_NODE}
SYSTEMCTL_STANDIN = """#!/bin/sh
# STAND-IN for systemctl (test only): answers what ansible.builtin.systemd_service asks and records
# every restart with its time; nothing is started or stopped.
case "$1" in
  daemon-reload) exit 0 ;;
  show) printf 'Id=%s.service\\nLoadState=loaded\\nActiveState=active\\nSubState=running\\n' "$2" ;;
  restart) printf '%s %s\\n' "$2" "$(date +%s.%N)" >> "{record}" ;;
  *) echo "stand-in systemctl: unsupported: $*" >&2; exit 1 ;;
esac
"""


def now_utc(offset=0):
    when = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=offset)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def report_ready(core, name, heartbeat):
    core.patch_node_status(name, {"status": {"conditions": [
        {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status",
         "lastHeartbeatTime": heartbeat, "lastTransitionTime": heartbeat}]}})


@pytest.fixture
def cluster(kube_apiserver, tmp_path, monkeypatch):
    """Inventory, the first server's k3s.yaml, the stand-in systemctl on PATH, running Nodes."""
    server_kubeconfig = tmp_path / "k3s.yaml"
    server_kubeconfig.write_text(yaml.safe_dump(k3s_style_kubeconfig(kube_apiserver.ca_file, kube_apiserver.token)))
    server_kubeconfig.chmod(0o600)

    def host(name):
        values = {"k3s_node_name": NODE_NAMES[name]}
        if name in RESTARTED:
            values["k3s_restart"] = {"service": "k3s-" + name, "node_name": RESTARTED[name]}
        return values
    inventory = {"all": {
        "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                 "k3s_server_kubeconfig_path": str(server_kubeconfig), "k3s_api_endpoint": kube_apiserver.url,
                 "k3s_wait_timeout": 60},
        "children": {"k3s_servers": {"hosts": {name: host(name) for name in SERVERS}},
                     "k3s_agents": {"hosts": {AGENT: host(AGENT)}}}}}
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory, sort_keys=False))
    record = tmp_path / "restarts"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(SYSTEMCTL_STANDIN.format(record=record))
    (bin_dir / "systemctl").chmod(0o755)
    monkeypatch.setenv("PATH", "%s:%s" % (bin_dir, monkeypatch.delenv("PATH", raising=False) or "/usr/bin:/bin"))
    core = client.CoreV1Api(kube_apiserver.api_client())
    for name in NODE_NAMES.values():
        register_node(core, name)
        report_ready(core, name, now_utc(-3600))  # Ready since long before this run
    yield tmp_path, core, record
    for name in NODE_NAMES.values():
        core.delete_node(name)


class Kubelets(threading.Thread):
    """Reports a restarted node Ready a moment after its restart (except those that never come back)."""

    def __init__(self, core, record, never_back=()):
        super().__init__(daemon=True)
        self.core, self.record, self.never_back = core, record, set(never_back)
        self.stop = threading.Event()
        self.restarts, self.reports = [], {}

    def run(self):
        while not self.stop.wait(0.1):
            lines = self.record.read_text().splitlines() if self.record.exists() else []
            for line in lines[len(self.restarts):]:
                service, at = line.split()
                host = service[len("k3s-"):]
                self.restarts.append((host, float(at)))
                if host not in self.never_back:
                    time.sleep(1.2)  # K3s starts; its kubelet then posts its status at once
                    report_ready(self.core, NODE_NAMES[host], now_utc())
                    self.reports[host] = time.time()


def run_with_kubelets(tmp_path, core, record, never_back=(), extra=None):
    kubelets = Kubelets(core, record, never_back)
    kubelets.start()
    try:
        returncode, output = run_playbook(tmp_path, extra=extra)
    finally:
        kubelets.stop.set()
        kubelets.join()
    return returncode, output, kubelets


def test_changed_nodes_restart_one_at_a_time_each_back_before_the_next(cluster):
    tmp_path, core, record = cluster

    returncode, output, kubelets = run_with_kubelets(tmp_path, core, record)

    assert returncode == 0, json.dumps(output)[-4000:]
    order = [host for host, _restarted_at in kubelets.restarts]
    assert order == ["lab-egress", "lab-rae-gw", AGENT]  # servers first, the first server first; one not changed
    for (previous, _previous_at), (host, restarted_at) in zip(kubelets.restarts, kubelets.restarts[1:]):
        assert restarted_at > kubelets.reports[previous], "%s restarted before %s was back" % (host, previous)
    waited = task_results(output, "Wait until the node reports Ready again after its restart, lab-rae-gw")
    assert [node["name"] for result in waited.values() for node in result["nodes"]] == ["lab-rae-gw"]


def test_a_node_that_does_not_come_back_stops_the_restarts_naming_it(cluster, kube_apiserver):
    tmp_path, core, record = cluster

    returncode, output, kubelets = run_with_kubelets(tmp_path, core, record, never_back=["lab-rae-gw"],
                                                     extra={"k3s_wait_timeout": 4})

    assert returncode == 2
    assert [host for host, _restarted_at in kubelets.restarts] == ["lab-egress", "lab-rae-gw"]  # the agent was left alone
    failed = task_results(output, "Wait until the node reports Ready again after its restart, lab-rae-gw")
    message = next(iter(failed.values()))["msg"]
    assert message.startswith("Nodes not Ready after 4s at %s: lab-rae-gw: Ready=True (KubeletReady: kubelet is "
                              "posting ready status), not reported since " % kube_apiserver.url), message


def test_node_ready_rides_out_an_api_server_that_cuts_connections_off(kube_apiserver, cluster, tmp_path):
    core = cluster[1]
    report_ready(core, "lab-egress", now_utc(5))  # already reported "after" the time asked for
    relay = Relay(kube_apiserver.url, cut_off=8)
    relay.start()
    try:
        kubeconfig = tmp_path / "relayed.kubeconfig"
        config = yaml.safe_load(pathlib.Path(kube_apiserver.kubeconfig).read_text())
        config["clusters"][0]["cluster"]["server"] = relay.url
        kubeconfig.write_text(yaml.safe_dump(config))
        result = run_module("node_ready", dict(kubeconfig=str(kubeconfig), names=["lab-egress"], timeout=60,
                                               heartbeat_after=now_utc()))
    finally:
        relay.close()

    assert relay.cut == 8  # the first eight connections (urllib3 retries some itself) were broken off, as by a restarting server
    assert [node["name"] for node in result["nodes"]] == ["lab-egress"]


def test_node_ready_refuses_a_time_it_cannot_read(kube_apiserver):
    failed = run_module("node_ready", dict(kubeconfig=kube_apiserver.kubeconfig, names=["lab-egress"],
                                           heartbeat_after="2026-12-05 10:00"), expect_fail=True)
    assert failed["msg"] == ("heartbeat_after: '2026-12-05 10:00' is not a UTC time YYYY-MM-DDTHH:MM:SSZ "
                             "(date -u +%Y-%m-%dT%H:%M:%SZ)")


class Relay(threading.Thread):
    """A TCP relay to the API server that breaks off its first ``cut_off`` connections (a reset before
    any answer), as clients of a server that is going down and coming back see it."""

    def __init__(self, upstream_url, cut_off):
        super().__init__(daemon=True)
        parsed = urllib.parse.urlsplit(upstream_url)
        self.upstream = (parsed.hostname, parsed.port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = "https://127.0.0.1:%d" % self.listener.getsockname()[1]
        self.cut_off, self.cut = cut_off, 0

    def run(self):
        while True:
            try:
                conn, _peer = self.listener.accept()
            except OSError:
                return  # closed
            if self.cut < self.cut_off:
                self.cut += 1
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
                continue
            upstream = socket.create_connection(self.upstream)
            for source, sink in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self.pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def pipe(source, sink):
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.listener.close()
