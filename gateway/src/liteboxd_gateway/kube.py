"""How to reach the Kubernetes API server: from a kubeconfig or the in-cluster service account.

Only connection settings live here (address, TLS, credentials); the watch itself is in cache.py.
Files are read when the connection is loaded, before the event loop runs; the in-cluster token
file, which the kubelet rotates, is re-read off the loop each time a request is made.
"""
import asyncio
import base64
import os
import ssl
import tempfile

import yaml

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# Kubeconfig user fields whose credentials only a client-go plugin can produce.
UNSUPPORTED_CREDENTIALS = ("exec", "auth-provider")


class KubeConfigError(ValueError):
    """The kubeconfig or the in-cluster environment cannot be used; the message says why."""


class KubeConnection:
    """Base URL, TLS context and bearer credentials of one API server."""

    def __init__(self, server: str, ssl_context, token: str = "", token_file: str = ""):
        self.server = server.rstrip("/")
        self.ssl_context = ssl_context
        self._token = token
        self._token_file = token_file

    async def auth_headers(self) -> dict:
        token = self._token
        if self._token_file:
            token = (await asyncio.to_thread(_read_text, self._token_file)).strip()
        return {"Authorization": f"Bearer {token}"} if token else {}


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def _materialise(data_b64: str, suffix: str) -> str:
    """ssl wants file names; write inline base64 data to a private temporary file."""
    handle = tempfile.NamedTemporaryFile("wb", suffix=suffix, delete=False)
    with handle:
        os.chmod(handle.name, 0o600)
        handle.write(base64.b64decode(data_b64))
    return handle.name


def _ssl_context(cluster: dict, user: dict, base_dir: str):
    def path_of(key):
        value = cluster.get(key) if key.startswith("certificate-authority") else user.get(key)
        return value if not value or os.path.isabs(value) else os.path.join(base_dir, value)

    if cluster.get("insecure-skip-tls-verify"):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif cluster.get("certificate-authority-data"):
        context = ssl.create_default_context(
            cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
    elif cluster.get("certificate-authority"):
        context = ssl.create_default_context(cafile=path_of("certificate-authority"))
    else:
        context = ssl.create_default_context()
    cert, key, temporary = path_of("client-certificate"), path_of("client-key"), []
    if user.get("client-certificate-data"):
        cert = _materialise(user["client-certificate-data"], ".crt")
        temporary.append(cert)
    if user.get("client-key-data"):
        key = _materialise(user["client-key-data"], ".key")
        temporary.append(key)
    try:
        if cert:
            context.load_cert_chain(cert, key)
    finally:
        for name in temporary:
            os.unlink(name)
    return context


def from_kubeconfig(path: str, context_name: str = "") -> KubeConnection:
    try:
        with open(path, encoding="utf-8") as handle:
            document = yaml.safe_load(handle) or {}
    except OSError as exc:
        raise KubeConfigError(f"cannot read kubeconfig {path}: {exc}") from exc
    context_name = context_name or document.get("current-context", "")

    def named(kind, name):
        for item in document.get(kind) or ():
            if item.get("name") == name:
                return item.get(kind[:-1]) or {}
        raise KubeConfigError(f"kubeconfig {path}: no {kind[:-1]} named {name!r}")

    context = named("contexts", context_name)
    cluster = named("clusters", context.get("cluster"))
    user = named("users", context["user"]) if context.get("user") else {}
    # An exec plugin or auth provider makes the credentials at run time: the gateway runs neither,
    # and without them it would watch the Pods with no credentials at all.
    for field in UNSUPPORTED_CREDENTIALS:
        if user.get(field):
            raise KubeConfigError(
                f"kubeconfig {path}: user {context['user']!r} authenticates with {field!r}, which the gateway "
                "cannot run; give that user a token, tokenFile or client certificate "
                "(for example a ServiceAccount token)")
    if not cluster.get("server"):
        raise KubeConfigError(f"kubeconfig {path}: cluster of context {context_name!r} has no server")
    base_dir = os.path.dirname(os.path.abspath(path))
    token_file = user.get("tokenFile", "")
    if token_file and not os.path.isabs(token_file):
        token_file = os.path.join(base_dir, token_file)
    return KubeConnection(cluster["server"], _ssl_context(cluster, user, base_dir),
                          token=user.get("token", ""), token_file=token_file)


def in_cluster() -> KubeConnection:
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise KubeConfigError("no kubeconfig given and KUBERNETES_SERVICE_HOST/PORT are not set")
    if ":" in host:
        host = f"[{host}]"
    context = ssl.create_default_context(cafile=os.path.join(SERVICE_ACCOUNT_DIR, "ca.crt"))
    return KubeConnection(f"https://{host}:{port}", context,
                          token_file=os.path.join(SERVICE_ACCOUNT_DIR, "token"))


def load(kubeconfig: str = "", context_name: str = "") -> KubeConnection:
    """The kubeconfig flag, else $KUBECONFIG (first file), else the in-cluster service account."""
    path = kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    return from_kubeconfig(path, context_name) if path else in_cluster()
