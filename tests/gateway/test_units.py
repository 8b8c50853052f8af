"""Pure parts of the gateway: routing, token handling, configuration, limits, cache entries."""
import hashlib

import pytest
from multidict import CIMultiDict

from liteboxd_gateway import auth, config, routing
from liteboxd_gateway.cache import Sandbox, SandboxCache
from liteboxd_gateway.headers import (connection_tokens, downstream_response_fields, is_websocket_upgrade,
                                      without_hop_by_hop)
from liteboxd_gateway.limits import SandboxLimits
from liteboxd_gateway.wsrelay import sendable_close_code


def resolve(target, domain="sb.example.com", **headers):
    return routing.resolve(target, CIMultiDict(headers), domain)


@pytest.mark.parametrize("target,expected", [
    ("/sandbox/abc/port/8080/x/y?z=1", ("abc", 8080, "/x/y?z=1", "path")),
    ("/sandbox/abc/port/8080", ("abc", 8080, "/", "path")),
    ("/sandbox/abc/port/8080?q", ("abc", 8080, "/?q", "path")),
    ("/sandbox/a.b-c/port/1/%2F%20?x=%26", ("a.b-c", 1, "/%2F%20?x=%26", "path")),
])
def test_path_form(target, expected):
    route = resolve(target)
    assert (route.sandbox_id, route.port, route.target, route.form) == expected


def test_header_and_host_forms_take_the_port_after_the_last_dash():
    route = resolve("/p?q", **{"OpenSandbox-Ingress-To": "my-sandbox-1-3000"})
    assert (route.sandbox_id, route.port, route.target, route.form) == ("my-sandbox-1", 3000, "/p?q", "header")
    route = resolve("/p", Host="my-sandbox-1-3000.SB.example.com:443")
    assert (route.sandbox_id, route.port, route.form) == ("my-sandbox-1", 3000, "host")
    assert resolve("/status.ok", Host="sb.example.com") is None
    assert resolve("/readyz") is None
    assert resolve("/x", domain="", Host="a-1.sb.example.com") is None


@pytest.mark.parametrize("target,headers", [
    ("/sandbox/abc/port/0/", {}),
    ("/sandbox/abc/port/65536/", {}),
    ("/sandbox/abc/port/08/", {}),
    ("/sandbox/ABC/port/80/", {}),
    ("/sandbox/abc/ports/80/", {}),
    ("/sandbox/abc/", {}),
    ("/x", {"OpenSandbox-Ingress-To": "abc"}),
    ("/x", {"OpenSandbox-Ingress-To": "abc-"}),
    ("/x", {"OpenSandbox-Ingress-To": "-80"}),
    ("x", {"OpenSandbox-Ingress-To": "abc-80"}),
    ("*", {"OpenSandbox-Ingress-To": "abc-80"}),
    ("/a/../b", {"OpenSandbox-Ingress-To": "abc-80"}),
    ("/a/%2E%2e/b", {"OpenSandbox-Ingress-To": "abc-80"}),
    ("/x", {"Host": "a.b-80.sb.example.com"}),
])
def test_malformed_routes_are_400(target, headers):
    with pytest.raises(routing.RouteError):
        resolve(target, **headers)


def test_query_token_is_removed_and_the_rest_kept_byte_for_byte():
    assert auth.strip_query_param("a=%2F&access_token=t%2Bk&b=c+d", "access_token") == ("t+k", "a=%2F&b=c+d")
    assert auth.strip_query_param("a=1", "access_token") == (None, "a=1")
    assert auth.strip_query_param("access_token=x&access_token=y", "access_token") == ("x", "")
    assert auth.strip_query_param("", "access_token") == (None, "")


def test_cookie_token_is_removed():
    assert auth.strip_cookie(["a=1; tok=s3cret; b=2"], "tok") == ("s3cret", "a=1; b=2")
    assert auth.strip_cookie(["tok=s3cret"], "tok") == ("s3cret", None)
    assert auth.strip_cookie(["a=1"], "tok") == (None, "a=1")


def test_token_matches_plain_or_sha256_only():
    token = "secret-token"
    digest = hashlib.sha256(token.encode()).hexdigest().encode()
    assert auth.token_matches(token, token.encode(), None)
    assert auth.token_matches(token, None, digest)
    assert auth.token_matches(token, b"other", digest)
    assert not auth.token_matches(digest.decode(), None, digest)
    assert not auth.token_matches("", b"", None)
    assert not auth.token_matches(token, None, None)
    assert not auth.token_matches(None, token.encode(), None)


def pod(name="s1", ip="10.0.0.5", ready="True", deleting=False, annotations=None):
    return {"metadata": {"name": name, "annotations": annotations or {},
                         **({"deletionTimestamp": "2026-01-01T00:00:00Z"} if deleting else {})},
            "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": ready}]}}


def test_sandbox_readiness_from_pod():
    assert Sandbox.from_pod(pod()).ready
    assert not Sandbox.from_pod(pod(ip=None)).ready
    assert not Sandbox.from_pod(pod(ready="False")).ready
    assert not Sandbox.from_pod(pod(deleting=True)).ready
    entry = Sandbox.from_pod(pod(annotations={"liteboxd.io/access-token-sha256": " ABCD "}))
    assert (entry.token, entry.token_sha256) == (None, b"abcd")


def test_cache_replace_reports_removed_sandboxes():
    cache, removed = SandboxCache(), []
    cache.on_removed.append(removed.append)
    cache.replace([pod("a"), pod("b")])
    cache.apply("DELETED", pod("a"))
    cache.replace([pod("c")])
    assert removed == ["a", "b"] and len(cache) == 1 and cache.synced


def test_limits():
    now = [0.0]
    limits = SandboxLimits(max_concurrent=2, rate=1.0, burst=2, clock=lambda: now[0])
    assert limits.acquire("a") and limits.acquire("a") and not limits.acquire("a") and limits.acquire("b")
    limits.release("a")
    assert limits.acquire("a")
    assert [limits.allow_rate("a") for _unused in range(3)] == [True, True, False]
    now[0] = 1.0
    assert limits.allow_rate("a") and not limits.allow_rate("a")


def test_connection_header_is_a_token_list():
    headers = CIMultiDict([("Connection", "keep-alive, Upgrade"), ("Connection", "X-Foo"), ("Upgrade", "websocket"),
                           ("X-Foo", "1"), ("X-Bar", "2"), ("Keep-Alive", "5")])
    assert connection_tokens(headers) == {"keep-alive", "upgrade", "x-foo"}
    assert is_websocket_upgrade("GET", headers) and not is_websocket_upgrade("POST", headers)
    assert list(without_hop_by_hop(headers).items()) == [("X-Bar", "2")]


@pytest.mark.parametrize("received,vanished,sent", [
    (None, 1011, 1011), (1006, 1001, 1001), (1005, 1011, 1000), (1000, 1011, 1000), (4001, 1011, 4001),
    (1015, 1011, 1011), (1004, 1011, 1011), (999, 1011, 1011), (1012, 1011, 1012),
])
def test_close_codes_never_put_1005_1006_on_the_wire(received, vanished, sent):
    assert sendable_close_code(received, vanished) == sent


def test_config_from_environment_and_flags(monkeypatch):
    monkeypatch.setenv("LITEBOXD_GATEWAY_LISTEN_HOST", "127.0.0.1")
    monkeypatch.setenv("LITEBOXD_GATEWAY_NAMESPACE", "from-env")
    monkeypatch.setenv("LITEBOXD_GATEWAY_ACCESS_LOG", "false")
    monkeypatch.setenv("LITEBOXD_GATEWAY_ALLOWED_PORTS", "80, 1024-2048")
    loaded = config.load(["--port", "9000"])
    assert (loaded.namespace, loaded.access_log, loaded.port) == ("from-env", False, 9000)
    assert 80 in loaded.allowed_ports and 1500 in loaded.allowed_ports and 81 not in loaded.allowed_ports
    assert config.load(["--namespace", "flag-wins"]).namespace == "flag-wins"
    defaults = config.load([])
    assert defaults.label_selector == "liteboxd.io/sandbox=true"


def test_config_errors_name_the_flag(monkeypatch):
    monkeypatch.setenv("LITEBOXD_GATEWAY_LISTEN_HOST", "127.0.0.1")
    with pytest.raises(config.ConfigError, match="--drain-delay"):
        config.load(["--drain-delay", "-1"])
    with pytest.raises(config.ConfigError, match="--token-cookie"):
        config.load(["--token-cookie", "a b"])


@pytest.mark.parametrize("fields, kept, has_length, framed", [
    # The usual answer: only the lone "Connection: keep-alive" goes, whatever its case.
    ([(b"Server", b"s"), (b"Content-Length", b"3"), (b"connection", b"Keep-Alive"), (b"ETag", b"e")],
     [(b"Server", b"s"), (b"Content-Length", b"3"), (b"ETag", b"e")], True, True),
    # Keep-Alive beside it is hop-by-hop too.
    ([(b"Connection", b"keep-alive"), (b"Keep-Alive", b"timeout=5"), (b"Transfer-Encoding", b"chunked")],
     [], False, True),
    # Fields named in Connection go with it.
    ([(b"Connection", b"close, X-Hop"), (b"X-Hop", b"secret"), (b"X-Kept", b"1")], [(b"X-Kept", b"1")], False, False),
    # Two Connection fields: both go, and what either names.
    ([(b"Connection", b"keep-alive"), (b"X-A", b"1"), (b"Connection", b"X-A")], [], False, False),
    # Nothing hop-by-hop: the very list comes back.
    ([(b"Content-Length", b"0")], [(b"Content-Length", b"0")], True, True),
])
def test_downstream_response_fields_drop_hop_by_hop_fields(fields, kept, has_length, framed):
    assert downstream_response_fields(fields) == (kept, has_length, framed)


def test_a_sandbox_id_label_groups_pods_and_picks_the_ready_then_the_newest():
    from liteboxd_gateway.cache import SandboxCache

    def pod(name, sandbox_id, created, ready, ip="10.42.0.9"):
        return {"metadata": {"name": name, "labels": {"sandbox-id": sandbox_id}, "creationTimestamp": created},
                "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}

    cache, removed = SandboxCache("sandbox-id"), []
    cache.on_removed.append(removed.append)
    cache.replace([pod("a", "s1", "2026-01-01T00:00:00Z", False), pod("b", "s1", "2026-01-01T00:01:00Z", False),
                   {"metadata": {"name": "no-id", "labels": {}}}])
    assert cache.get("s1").name == "b" and len(cache) == 1  # neither Ready: the newest
    cache.apply("MODIFIED", pod("a", "s1", "2026-01-01T00:00:00Z", True))
    assert cache.get("s1").name == "a"  # the Ready one
    cache.apply("MODIFIED", pod("b", "s1", "2026-01-01T00:01:00Z", True))
    assert cache.get("s1").name == "b"  # both Ready: the newest
    cache.apply("MODIFIED", pod("b", "s2", "2026-01-01T00:01:00Z", True))  # its id label changed
    assert (cache.get("s1").name, cache.get("s2").name) == ("a", "b")
    cache.apply("DELETED", pod("a", "s1", "2026-01-01T00:00:00Z", True))
    assert cache.get("s1") is None and removed == ["s1"]
    cache.replace([])
    assert removed == ["s1", "s2"]


def test_the_limits_say_they_count_per_worker_process():
    """Workers do not share counts (docs/gateway.md): the flags' help says so, for the operator who reads
    only `liteboxd-gateway --help` and sets --workers."""
    helps = {action.dest: action.help for action in config.build_parser()._actions}
    for name in ("max_concurrent_per_sandbox", "rate_per_sandbox", "rate_burst"):
        assert "in each worker process" in helps[name], name
    assert "up to N times this" in helps["max_concurrent_per_sandbox"]
