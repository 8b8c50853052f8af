"""A real Kubernetes API server for tests: etcd + kube-apiserver v1.20.2 on 127.0.0.1.

The binaries come from ``scripts/build-kube-apiserver.sh`` (built once from Debian's source
package and cached outside the checkout, or taken from ``KUBEBUILDER_ASSETS``). Both processes
run in their own session with a parent-death signal, and the fixture stops them by PID, so a
failing or interrupted test run leaves nothing behind.

Cilium's CRDs are installed from ``LITEBOXD_CILIUM_CRDS`` (a directory of CRD YAML files, CI
passes ``../shared/crds/cilium``); without it, the project's minimal structural CRDs of the
same group and kinds in ``tests/apiserver/crds`` are used.
"""
import ctypes
import datetime
import ipaddress
import os
import pathlib
import secrets
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
import uuid

import pytest
import yaml

from tests.lib.collection import REPO

PR_SET_PDEATHSIG = 1
BUILD_SCRIPT = REPO / "scripts" / "build-kube-apiserver.sh"
MINIMAL_CRDS = REPO / "tests" / "apiserver" / "crds"


def _die_with_parent():
    """Runs in the child before exec: the kernel sends SIGTERM when the parent dies. The kernel
    ties this to the thread that forked, so start (and restart) the servers from the main thread,
    not from a worker thread such as asyncio.to_thread."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port(host="127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def kube_assets() -> pathlib.Path:
    """Directory holding kube-apiserver and etcd (builds on first use, progress on stderr)."""
    out = subprocess.run(["bash", str(BUILD_SCRIPT)], check=True, stdout=subprocess.PIPE, text=True)
    return pathlib.Path(out.stdout.strip().splitlines()[-1])


def write_pki(pki: pathlib.Path, ips=("127.0.0.1",)):
    """A CA, a serving certificate for localhost and ``ips``, and a service-account key pair."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    def key():
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def pem_key(k):
        return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                               serialization.NoEncryption())

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "liteboxd-test-ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=7))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    srv_key = key()
    srv = (x509.CertificateBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
           .issuer_name(ca_name).public_key(srv_key.public_key()).serial_number(x509.random_serial_number())
           .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=7))
           .add_extension(x509.SubjectAlternativeName([
               x509.DNSName("localhost"), x509.DNSName("kubernetes.default.svc")]
               + [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]), critical=False)
           .sign(ca_key, hashes.SHA256()))
    sa_key = key()
    (pki / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (pki / "server.crt").write_bytes(srv.public_bytes(serialization.Encoding.PEM))
    (pki / "server.key").write_bytes(pem_key(srv_key))
    (pki / "sa.key").write_bytes(pem_key(sa_key))
    (pki / "sa.pub").write_bytes(sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def apiserver_args(etcd_url, bind_address, port, pki, tokens_file, advertise_address=None):
    """kube-apiserver flags that work for v1.20 without a controller-manager (lab-notes).
    A host without a default route (every lab host) must name its advertise address."""
    pki = pathlib.Path(pki)
    return [
        "--etcd-servers", etcd_url,
        "--bind-address", bind_address, "--secure-port", str(port),
        "--advertise-address", advertise_address or bind_address,
        "--tls-cert-file", str(pki / "server.crt"), "--tls-private-key-file", str(pki / "server.key"),
        "--client-ca-file", str(pki / "ca.crt"),
        "--token-auth-file", str(tokens_file),
        "--authorization-mode", "RBAC",
        "--service-account-key-file", str(pki / "sa.pub"),
        "--service-account-signing-key-file", str(pki / "sa.key"),
        "--service-account-issuer", "https://kubernetes.default.svc",
        "--api-audiences", "https://kubernetes.default.svc",
        "--service-cluster-ip-range", "10.96.0.0/12",
        "--disable-admission-plugins", "ServiceAccount",
        "--endpoint-reconciler-type", "none",
        "--allow-privileged=true",
        "--v", "1",
    ]


def kubeconfig(server, ca_file, token, name="liteboxd-test"):
    return {
        "apiVersion": "v1", "kind": "Config", "current-context": name,
        "clusters": [{"name": name, "cluster": {"server": server, "certificate-authority": str(ca_file)}}],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": "admin"}}],
    }


class KubeAPIServer:
    """etcd + kube-apiserver in a scratch directory; ``start()``, ``stop()``, ``restart_apiserver()``."""

    def __init__(self, workdir: pathlib.Path, assets: pathlib.Path):
        self.workdir = workdir
        self.assets = assets
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.token = secrets.token_hex(16)
        self.ca_file = str(workdir / "pki" / "ca.crt")
        self.kubeconfig = str(workdir / "kubeconfig")
        self._etcd = None
        self._apiserver = None
        self._etcd_url = None

    # -- processes ------------------------------------------------------------------------
    def _spawn(self, name, argv):
        log = open(self.workdir / f"{name}.log", "ab")
        try:
            return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, preexec_fn=_die_with_parent)
        finally:
            log.close()

    def _start_etcd(self):
        client, peer = free_port(), free_port()
        self._etcd_url = f"http://127.0.0.1:{client}"
        self._etcd = self._spawn("etcd", [
            str(self.assets / "etcd"), "--name", "liteboxd-test", "--data-dir", str(self.workdir / "etcd"),
            "--listen-client-urls", self._etcd_url, "--advertise-client-urls", self._etcd_url,
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"liteboxd-test=http://127.0.0.1:{peer}",
            "--log-level", "warn"])
        self._wait(lambda: urllib.request.urlopen(f"{self._etcd_url}/health", timeout=2).status == 200,
                   self._etcd, "etcd", 30)

    def _start_apiserver(self):
        pki = self.workdir / "pki"
        self._apiserver = self._spawn("kube-apiserver", [str(self.assets / "kube-apiserver")] + apiserver_args(
            self._etcd_url, "127.0.0.1", self.port, self.workdir / "pki", self.workdir / "tokens.csv"))
        ctx = ssl.create_default_context(cafile=self.ca_file)

        def ready():
            req = urllib.request.Request(f"{self.url}/readyz", headers={"Authorization": f"Bearer {self.token}"})
            return urllib.request.urlopen(req, timeout=2, context=ctx).status == 200

        self._wait(ready, self._apiserver, "kube-apiserver", 90)

    def _wait(self, probe, proc, name, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}: "
                                   f"{(self.workdir / (name + '.log')).read_text()[-3000:]}")
            try:
                if probe():
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{name} not ready after {timeout}s; see {self.workdir / (name + '.log')}")

    @staticmethod
    def _stop(proc):
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    # -- lifecycle ------------------------------------------------------------------------
    def start(self):
        (self.workdir / "pki").mkdir(parents=True, exist_ok=True)
        write_pki(self.workdir / "pki")
        (self.workdir / "tokens.csv").write_text(f'{self.token},admin,admin,"system:masters"\n')
        self._write_kubeconfig()
        self._start_etcd()
        self._start_apiserver()

    def stop(self):
        self._stop(self._apiserver)
        self._stop(self._etcd)

    def restart_apiserver(self):
        """Stop and start kube-apiserver only (etcd keeps the data), on the same port."""
        self._stop(self._apiserver)
        self._start_apiserver()

    def stop_apiserver(self):
        self._stop(self._apiserver)

    def start_apiserver(self):
        self._start_apiserver()

    @property
    def pids(self):
        return [p.pid for p in (self._etcd, self._apiserver) if p is not None and p.poll() is None]

    def _write_kubeconfig(self):
        pathlib.Path(self.kubeconfig).write_text(yaml.safe_dump(kubeconfig(self.url, self.ca_file, self.token)))

    # -- clients and CRDs -----------------------------------------------------------------
    def api_client(self):
        from kubernetes import config
        return config.new_client_from_config(config_file=self.kubeconfig)

    def install_crds(self, directory: pathlib.Path):
        """Create every CRD in ``directory`` (as `kubectl create --validate=false`) and wait until established."""
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        api = client.ApiextensionsV1Api(self.api_client())
        names = []
        for path in sorted(directory.glob("*.yaml")):
            for doc in yaml.safe_load_all(path.read_text()):
                if not doc or doc.get("kind") != "CustomResourceDefinition":
                    continue
                try:
                    api.create_custom_resource_definition(doc)
                except ApiException as exc:
                    if exc.status != 409:
                        raise
                names.append(doc["metadata"]["name"])
        deadline = time.monotonic() + 30
        for name in names:
            while True:
                conditions = api.read_custom_resource_definition(name).status.conditions or []
                if any(c.type == "Established" and c.status == "True" for c in conditions):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"CRD {name} not established")
                time.sleep(0.2)
        return names


def cilium_crds_dir() -> pathlib.Path:
    configured = os.environ.get("LITEBOXD_CILIUM_CRDS")
    return (REPO / configured).resolve() if configured else MINIMAL_CRDS


@pytest.fixture(scope="session")
def kube_apiserver(tmp_path_factory):
    server = KubeAPIServer(tmp_path_factory.mktemp("kube-apiserver"), kube_assets())
    try:
        server.start()
        server.installed_crds = server.install_crds(cilium_crds_dir())
        yield server
    finally:
        server.stop()


def delete_namespace(api_client, name):
    """Delete and finalize: without a controller-manager nothing else would empty it."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    core = client.CoreV1Api(api_client)
    try:
        core.delete_namespace(name)
        core.replace_namespace_finalize(name, {"metadata": {"name": name}, "spec": {"finalizers": []}})
    except ApiException as exc:
        if exc.status != 404:
            raise


@pytest.fixture
def kube_namespace(kube_apiserver, request):
    from kubernetes import client

    base = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40].strip("-")
    name = f"t-{base}-{uuid.uuid4().hex[:6]}"
    api_client = kube_apiserver.api_client()
    client.CoreV1Api(api_client).create_namespace({"metadata": {"name": name}})
    try:
        yield name
    finally:
        delete_namespace(api_client, name)


def lab_control_plane(args):
    """``python -m tests.lib.apiserver lab-control-plane DIR --ip A --server URL``: the lab's
    API-server material (PKI, admin token, kubeconfig, kube-apiserver flags), made once."""
    import json

    state = pathlib.Path(args.dir)
    if not (state / "pki" / "ca.crt").exists():
        (state / "pki").mkdir(parents=True, exist_ok=True)
        write_pki(state / "pki", ["127.0.0.1"] + args.ip)
        token = secrets.token_hex(16)
        (state / "pki" / "tokens.csv").write_text(f'{token},admin,admin,"system:masters"\n')
        (state / "kubeconfig").write_text(yaml.safe_dump(kubeconfig(args.server, state / "pki" / "ca.crt", token, "liteboxd-lab")))
        changed = True
    else:
        changed = False
    remote = pathlib.Path("/etc/kubernetes/pki")
    argv = apiserver_args("http://127.0.0.1:2379", "0.0.0.0", 6443, remote, remote / "tokens.csv", args.ip[0])
    print(json.dumps({"changed": changed, "argv": argv, "dir": str(state)}))


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tests.lib.apiserver")
    sub = parser.add_subparsers(required=True)
    lab = sub.add_parser("lab-control-plane")
    lab.add_argument("dir")
    lab.add_argument("--ip", action="append", default=[])
    lab.add_argument("--server", required=True)
    lab.set_defaults(func=lab_control_plane)
    parsed = parser.parse_args()
    parsed.func(parsed)
