"""Benchmark of the cluster-plane modules against a real kube-apiserver + etcd (prints numbers;
not a test, nothing passes or fails).

1. N sandboxes created with the `sandbox` module (`wait: false`), each run the way Ansible runs a
   module (a fresh Python process: interpreter start + imports included).
2. N `sandbox_network_policies` reconciles of an unchanged namespace, same way.
3. The same two operations in-process (module code only), counting the HTTP requests each run
   makes with a hook on the kubernetes ApiClient's REST client.

Usage: python tests/bench/k8s_bench.py [--count 200]
Environment: KUBEBUILDER_ASSETS / LITEBOXD_CILIUM_CRDS as for the tests.
"""
import argparse
import contextlib
import io
import json
import pathlib
import statistics
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.lib.collection import install_on_path  # noqa: E402

install_on_path()

from ansible.module_utils.testing import patch_module_args  # noqa: E402
from kubernetes.client import rest  # noqa: E402

from ansible_collections.liteboxd.sandbox_network.plugins.modules import sandbox as sandbox_module  # noqa: E402
from ansible_collections.liteboxd.sandbox_network.plugins.modules import (  # noqa: E402
    sandbox_network_policies as policies_module)
from tests.lib.apiserver import KubeAPIServer, cilium_crds_dir, kube_assets  # noqa: E402
from tests.lib.modules import run_module  # noqa: E402
from tests.lib.timing import timed  # noqa: E402


class RequestCounter:
    """Counts every HTTP request the kubernetes client sends (hook on RESTClientObject.request)."""

    def __init__(self):
        self.count = 0
        self._original = rest.RESTClientObject.request

    def __enter__(self):
        counter = self

        def counting(client_self, *args, **kwargs):
            counter.count += 1
            return counter._original(client_self, *args, **kwargs)

        rest.RESTClientObject.request = counting
        return self

    def __exit__(self, *exc):
        rest.RESTClientObject.request = self._original


def run_in_process(module, args):
    """Run a module's main() in this process; return its result dict."""
    out = io.StringIO()
    with patch_module_args(args), contextlib.redirect_stdout(out):
        try:
            module.main()
        except SystemExit:
            pass
    result = json.loads(out.getvalue().strip().splitlines()[-1])
    if result.get("failed"):
        raise RuntimeError(result.get("msg"))
    return result


def percentiles(samples):
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * len(ordered))) - 1)]
    return statistics.median(ordered) * 1000, p95 * 1000


def report(label, samples, extra=""):
    p50, p95 = percentiles(samples)
    print("%-58s n=%-4d p50=%8.1f ms  p95=%8.1f ms  total=%6.1f s%s" % (
        label, len(samples), p50, p95, sum(samples), extra), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    count = parser.parse_args().count

    with tempfile.TemporaryDirectory(prefix="k8s-bench-") as workdir:
        server = KubeAPIServer(pathlib.Path(workdir), kube_assets())
        server.start()
        try:
            server.install_crds(cilium_crds_dir())
            from kubernetes import client
            core = client.CoreV1Api(server.api_client())
            for name in ("bench-subprocess", "bench-inprocess"):
                core.create_namespace({"metadata": {"name": name}})
            auth = {"host": server.url, "api_key": server.token, "ca_cert": server.ca_file}
            print("kube-apiserver v1.20.2 at %s, Cilium CRDs from %s, %d items per series"
                  % (server.url, cilium_crds_dir(), count), flush=True)

            def sandbox_args(namespace, index):
                return dict(auth, name="sbx-%04d" % index, namespace=namespace, image="example.invalid/sandbox:1",
                            ports=[8000], wait=False, network={"allow_internet_access": index % 2 == 0})

            # -- as Ansible runs modules: one process per task ----------------------------
            samples = [timed(lambda i=i: run_module("sandbox", sandbox_args("bench-subprocess", i)))[0]
                       for i in range(count)]
            report("sandbox create (wait: false), module process", samples)
            policy_args = dict(auth, namespace="bench-subprocess")
            run_module("sandbox_network_policies", policy_args)
            samples = []
            for _run in range(count):
                seconds, result = timed(lambda: run_module("sandbox_network_policies", policy_args))
                assert result["changed"] is False
                samples.append(seconds)
            report("policy reconcile, unchanged namespace, module process", samples)

            # -- module code only, with the requests counted -------------------------------
            created, create_requests = [], []
            for i in range(count):
                with RequestCounter() as counter:
                    seconds = timed(lambda i=i: run_in_process(sandbox_module, sandbox_args("bench-inprocess", i)))[0]
                created.append(seconds)
                create_requests.append(counter.count)
            report("sandbox create (wait: false), in-process", created,
                   "  requests/run=%s" % statistics.median(create_requests))
            idle, idle_requests = [], []
            for i in range(count):
                with RequestCounter() as counter:
                    seconds, result = timed(lambda i=i: run_in_process(sandbox_module,
                                                                       sandbox_args("bench-inprocess", i)))
                assert result["changed"] is False
                idle.append(seconds)
                idle_requests.append(counter.count)
            report("sandbox re-run, unchanged, in-process", idle,
                   "  requests/run=%s" % statistics.median(idle_requests))
            policy_args = dict(auth, namespace="bench-inprocess")
            run_in_process(policies_module, policy_args)
            samples, requests = [], []
            for _run in range(count):
                with RequestCounter() as counter:
                    seconds, result = timed(lambda: run_in_process(policies_module, policy_args))
                assert result["changed"] is False
                samples.append(seconds)
                requests.append(counter.count)
            report("policy reconcile, unchanged namespace, in-process", samples,
                   "  requests/run=%s" % statistics.median(requests))
            print("API requests per idempotent run: sandbox %s, sandbox_network_policies %s "
                  "(min %d, max %d)" % (statistics.median(idle_requests), statistics.median(requests),
                                        min(requests), max(requests)))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
