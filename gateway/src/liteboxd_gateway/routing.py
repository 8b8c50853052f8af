"""Which sandbox and port a request is for, and the request-target to forward.

Three forms, checked in this order:
1. header ``OpenSandbox-Ingress-To: <id>-<port>`` (or the older ``OPEN-SANDBOX-INGRESS``): the
   whole request-target is forwarded;
2. Host ``<id>-<port>.<domain>`` (port after the last ``-``): the whole request-target is forwarded;
3. path ``<prefix><id>/port/<port>/<rest>`` (``--path-prefix``, ``/sandbox/`` or LiteBoxd's
   ``/api/v1/sandbox/``): ``/<rest>`` and the query are forwarded.

Everything works on the raw request-target, so percent-encoding reaches the sandbox untouched.
Targets with dot segments (also percent-encoded, also after decoding encoded slashes) are refused:
a sandbox's own server must never be able to resolve them into another path than the one checked.
"""
import re
from urllib.parse import unquote

INGRESS_HEADERS = ("OpenSandbox-Ingress-To", "OPEN-SANDBOX-INGRESS")
PATH_PREFIX = "/sandbox/"
# A Pod name: a DNS-1123 subdomain (lower case, digits, '-' and '.').
SANDBOX_ID_RE = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
# In a Host name the sandbox id is one DNS label.
HOST_LABEL_RE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
PORT_RE = re.compile(r"[1-9][0-9]{0,4}")


class RouteError(Exception):
    """The request names a sandbox in a malformed or contradictory way (always a 400)."""

    status = 400


class Route:
    """Where a request goes: ``sandbox_id``, ``port``, ``target`` (raw path and query), ``form``."""

    __slots__ = ("sandbox_id", "port", "target", "form", "prefix")

    def __init__(self, sandbox_id: str, port: int, target: str, form: str, prefix: str = ""):
        self.sandbox_id = sandbox_id
        self.port = port
        self.target = target
        self.form = form
        self.prefix = prefix

    def __repr__(self):
        return f"Route({self.sandbox_id!r}, {self.port}, {self.target!r}, {self.form!r})"


def split_id_port(value: str, id_re=SANDBOX_ID_RE):
    """``<id>-<port>`` -> (id, port); the port is after the last '-'."""
    sandbox_id, sep, port = value.strip().rpartition("-")
    if not sep or not id_re.fullmatch(sandbox_id) or not PORT_RE.fullmatch(port) or int(port) > 65535:
        raise RouteError(f"malformed sandbox target {value!r}: expected <id>-<port>")
    return sandbox_id, int(port)


def check_target(target: str) -> str:
    """Refuse request-targets that are not origin-form or that contain dot segments."""
    if not target.startswith("/") or target.startswith("//"):
        raise RouteError("request target must be an absolute path")
    path = target.split("?", 1)[0]
    if "." not in path and "%" not in path:
        return target  # no dot segment can hide in it
    for candidate in (path, unquote(path)):
        for segment in re.split(r"[/\\]", candidate):
            if segment in (".", "..") or segment.lower() in ("%2e", "%2e%2e", ".%2e", "%2e."):
                raise RouteError("dot segments are not allowed in the path")
    return target


def _host_name(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):
        return host
    return host.rsplit(":", 1)[0] if ":" in host else host


def _from_headers(headers):
    values = []
    for name in INGRESS_HEADERS:
        if name in headers:  # most requests carry neither: no list made per name
            values.extend(headers.getall(name))
    if not values:
        return None
    distinct = {value.strip() for value in values}
    if len(distinct) > 1:
        raise RouteError("conflicting sandbox routing headers")
    return split_id_port(distinct.pop())


def _from_host(headers, domain: str):
    hosts = headers.getall("Host", ())
    if len(hosts) > 1:
        raise RouteError("more than one Host header")
    if not domain or not hosts:
        return None
    name = _host_name(hosts[0])
    suffix = "." + domain
    if not name.endswith(suffix):
        return None
    return split_id_port(name[: -len(suffix)], HOST_LABEL_RE)


def _from_path(raw_target: str, path_prefix: str):
    path, sep, query = raw_target.partition("?")
    parts = path[len(path_prefix):].split("/", 3)
    if len(parts) < 3 or parts[1] != "port":
        raise RouteError(f"expected {path_prefix}<id>/port/<port>/<path>")
    sandbox_id, port = parts[0], parts[2]
    checked = _checked_paths.get((path_prefix, sandbox_id, port))
    if checked is None:
        if not SANDBOX_ID_RE.fullmatch(sandbox_id) or not PORT_RE.fullmatch(port) or int(port) > 65535:
            raise RouteError(f"expected {path_prefix}<id>/port/<port>/<path> with a sandbox id and a port")
        if len(_checked_paths) >= CHECKED_PATHS:
            _checked_paths.clear()
        checked = _checked_paths[(path_prefix, sandbox_id, port)] = (
            int(port), f"{path_prefix}{sandbox_id}/port/{port}")
    rest = "/" + parts[3] if len(parts) == 4 else "/"
    return sandbox_id, checked[0], rest + sep + query, checked[1]


# Path prefix, sandbox id and port texts of path-form targets already found valid -> (port, prefix): the same
# few sandboxes are named request after request.
CHECKED_PATHS = 4096
_checked_paths = {}


def resolve(raw_target: str, headers, domain: str = "", path_prefix: str = PATH_PREFIX):
    """The Route of a request, or None when it is not for a sandbox (the gateway's own paths).

    Raises RouteError (400) for malformed or conflicting routing information.
    """
    by_header = _from_headers(headers)
    by_host = _from_host(headers, domain)
    if by_header and by_host and by_header != by_host:
        raise RouteError("routing header and Host name a different sandbox")
    if by_header or by_host:
        sandbox_id, port = by_header or by_host
        return Route(sandbox_id, port, check_target(raw_target), "header" if by_header else "host")
    if raw_target.startswith(path_prefix):
        sandbox_id, port, target, prefix = _from_path(raw_target, path_prefix)
        return Route(sandbox_id, port, check_target(target), "path", prefix)
    return None
