"""Configuration from command-line flags, each with an environment variable as its default.

Every flag ``--some-name`` can also be given as ``LITEBOXD_GATEWAY_SOME_NAME``; a flag wins over
the environment. Values are checked here, so a bad setting stops the gateway before it listens.
"""
import argparse
import dataclasses
import ipaddress
import os
import re

from .routing import PATH_PREFIX

ENV_PREFIX = "LITEBOXD_GATEWAY_"
# What --profile sets when the flag itself is not given: which Pods are sandboxes, the path form's
# prefix, and the label whose value is the sandbox id (empty: the Pod's name). liteboxd is how
# LiteBoxd's server makes its Pods (sandbox-<id>, labels app=liteboxd and sandbox-id=<id>) and the
# route of its gateway (/api/v1/sandbox/:sandbox/port/:port/*).
PROFILES = {
    "default": {"label_selector": "liteboxd.io/sandbox=true", "path_prefix": PATH_PREFIX, "sandbox_id_label": ""},
    "liteboxd": {"label_selector": "app=liteboxd", "path_prefix": "/api/v1/sandbox/", "sandbox_id_label": "sandbox-id"},
}
LABEL_KEY_RE = re.compile(r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
LOG_LEVELS = ("debug", "info", "warning", "error")
WEBSOCKET_UPSTREAMS = ("direct", "apiserver")
DOMAIN_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)*[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class ConfigError(argparse.ArgumentTypeError):
    """A setting is invalid; the message names the flag."""


@dataclasses.dataclass(frozen=True)
class PortRanges:
    """Sandbox ports the gateway may forward to, as inclusive ranges."""

    ranges: tuple

    @classmethod
    def parse(cls, text: str) -> "PortRanges":
        ranges = []
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            low, _unused, high = part.partition("-")
            if not low.isdigit() or (high and not high.isdigit()):
                raise ConfigError(f"--allowed-ports: {part!r} is not a port or a range like 1024-65535")
            low_port, high_port = int(low), int(high or low)
            if not 1 <= low_port <= high_port <= 65535:
                raise ConfigError(f"--allowed-ports: {part!r} is outside 1-65535 or reversed")
            ranges.append((low_port, high_port))
        if not ranges:
            raise ConfigError("--allowed-ports: no port given")
        return cls(tuple(ranges))

    def __contains__(self, port: int) -> bool:
        for low, high in self.ranges:  # asked per request: a loop, not any() over a generator
            if low <= port <= high:
                return True
        return False

    def __str__(self) -> str:
        return ",".join(str(low) if low == high else f"{low}-{high}" for low, high in self.ranges)


@dataclasses.dataclass(frozen=True)
class Config:
    """All settings of one gateway process (see ``build_parser`` for their meaning)."""

    listen_host: str = "0.0.0.0"
    port: int = 8080
    tls_cert_file: str = ""
    tls_key_file: str = ""
    allow_plain_http: bool = False
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 9090
    workers: int = 1
    reuse_port: bool = False
    event_loop: str = "uvloop"
    kubeconfig: str = ""
    kube_context: str = ""
    namespace: str = "liteboxd-sandbox"
    profile: str = "default"
    label_selector: str = PROFILES["default"]["label_selector"]
    path_prefix: str = PROFILES["default"]["path_prefix"]
    sandbox_id_label: str = PROFILES["default"]["sandbox_id_label"]
    domain: str = ""
    allowed_ports: PortRanges = PortRanges(((1, 65535),))
    upstream_connect_timeout: float = 5.0
    upstream_read_timeout: float = 0.0
    upstream_idle_timeout: float = 4.0
    upstream_connect_retries: int = 2
    client_idle_timeout: float = 75.0
    client_body_timeout: float = 60.0
    max_header_size: int = 8190
    max_headers: int = 100
    max_concurrent_per_sandbox: int = 256
    rate_per_sandbox: float = 0.0
    rate_burst: int = 100
    ws_max_message_size: int = 4 * 1024 * 1024
    ws_idle_timeout: float = 600.0
    ws_max_lifetime: float = 86400.0
    websocket_upstream: str = "direct"
    token_query_param: str = "access_token"
    token_cookie: str = "liteboxd_access_token"
    trust_forwarded_headers: bool = False
    watch_timeout: int = 300
    watch_backoff_initial: float = 0.5
    watch_backoff_max: float = 30.0
    drain_delay: float = 5.0
    shutdown_timeout: float = 30.0
    log_level: str = "info"
    access_log: bool = True


def _env_name(flag: str) -> str:
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def _bool(text: str) -> bool:
    lowered = str(text).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {text!r}")


def build_parser() -> argparse.ArgumentParser:
    defaults = Config()
    parser = argparse.ArgumentParser(
        prog="liteboxd-gateway",
        description="Token-checked HTTP/WebSocket gateway to LiteBoxd sandbox Pods. "
        f"Every flag can also be set as an environment variable {ENV_PREFIX}<FLAG_NAME>.",
    )

    def add(flag, kind, help_text, choices=None):
        field = flag.lstrip("-").replace("-", "_")
        # A setting --profile decides stays None when not given, so load() can tell.
        default = None if field in PROFILES["default"] else getattr(defaults, field)
        env = os.environ.get(_env_name(flag))
        shown = "the --profile's" if default is None else f"{default!s}"
        kwargs = {"dest": field, "help": f"{help_text} (env {_env_name(flag)}, default {shown})"}
        if kind is bool:
            kwargs.update(type=_bool, nargs="?", const=True)
        else:
            kwargs.update(type=kind)
        if choices:
            kwargs["choices"] = choices
        kwargs["default"] = default if env is None else env
        parser.add_argument(flag, **kwargs)

    add("--listen-host", str, "address to listen on")
    add("--port", int, "proxy port")
    add("--tls-cert-file", str, "PEM certificate (chain) to serve HTTPS with, together with --tls-key-file; "
        "empty: plain HTTP")
    add("--tls-key-file", str, "PEM private key of --tls-cert-file")
    add("--allow-plain-http", bool, "serve plain HTTP on a non-loopback --listen-host, where access tokens cross the "
        "network in clear: only behind a TLS terminator that reaches the gateway over a trusted link")
    add("--metrics-host", str, "address of the Prometheus metrics listener")
    add("--metrics-port", int, "Prometheus metrics port (worker N listens on port+N; 0: a free port each, logged at start)")
    add("--workers", int, "worker processes sharing the proxy port with SO_REUSEPORT")
    add("--reuse-port", bool, "set SO_REUSEPORT on the proxy socket even with one worker")
    add("--event-loop", str, "event loop implementation", choices=("uvloop", "asyncio"))
    add("--kubeconfig", str, "kubeconfig file; empty: KUBECONFIG, then the in-cluster service account")
    add("--kube-context", str, "kubeconfig context; empty: the current context")
    add("--namespace", str, "namespace of the sandbox Pods")
    add("--profile", str, "whose sandbox Pods: default (liteboxd.io/sandbox=true, path /sandbox/, id = Pod name) or "
        "liteboxd (LiteBoxd's own: app=liteboxd, path /api/v1/sandbox/, id = label sandbox-id); sets the defaults "
        "of the next three flags", choices=tuple(PROFILES))
    add("--label-selector", str, "label selector of the sandbox Pods")
    add("--path-prefix", str, "path form <prefix><id>/port/<port>/<path>")
    add("--sandbox-id-label", str, "label whose value is the sandbox id (several Pods may carry one: the Ready, "
        "else the newest, serves); empty: the Pod's name")
    add("--domain", str, "domain for Host routing <id>-<port>.<domain>; empty: Host routing off")
    add("--allowed-ports", PortRanges.parse, "sandbox ports that may be reached, e.g. 80,443,1024-65535")
    add("--upstream-connect-timeout", float, "seconds to connect to a sandbox (504 after)")
    add("--upstream-read-timeout", float, "seconds between reads from a sandbox; 0: no limit")
    add("--upstream-idle-timeout", float, "seconds an idle upstream keep-alive connection is kept")
    add("--upstream-connect-retries", int, "extra connect attempts after a refused/failed connect")
    add("--client-idle-timeout", float, "seconds a client connection may idle or take to send its headers")
    add("--client-body-timeout", float, "seconds between two reads of a request body from the client")
    add("--max-header-size", int, "longest request line or header field in bytes")
    add("--max-headers", int, "most request header fields")
    add("--max-concurrent-per-sandbox", int, "open requests and WebSockets per sandbox in each worker process "
        "(429 above; with --workers N a sandbox may hold up to N times this); 0: no limit")
    add("--rate-per-sandbox", float, "requests per second per sandbox in each worker process (429 above; with "
        "--workers N up to N times this); 0: no limit")
    add("--rate-burst", int, "burst size of the per-sandbox request rate, in each worker process")
    add("--ws-max-message-size", int, "largest WebSocket message in bytes (closed with 1009 above)")
    add("--ws-idle-timeout", float, "seconds without a WebSocket message either way before closing")
    add("--ws-max-lifetime", float, "longest WebSocket session in seconds")
    add("--websocket-upstream", str, "WebSocket handshakes to the Pod IP (direct) or through the API server's pod proxy "
        "(apiserver: when Pod IPs are not routable from the gateway; needs pods/proxy get+create)",
        choices=WEBSOCKET_UPSTREAMS)
    add("--token-query-param", str, "query parameter that may carry the token on WebSocket upgrades")
    add("--token-cookie", str, "cookie that may carry the token on WebSocket upgrades")
    add("--trust-forwarded-headers", bool, "append to the client's X-Forwarded-* (behind a trusted proxy)")
    add("--watch-timeout", int, "seconds the API server keeps one watch open")
    add("--watch-backoff-initial", float, "first reconnect delay of the Pod watch in seconds")
    add("--watch-backoff-max", float, "longest reconnect delay of the Pod watch in seconds")
    add("--drain-delay", float, "seconds /readyz reports draining before the listener closes on SIGTERM")
    add("--shutdown-timeout", float, "seconds in-flight requests get to finish on SIGTERM")
    add("--log-level", str, "log level", choices=LOG_LEVELS)
    add("--access-log", bool, "write a JSON access log line per request")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    return parser


def _check(config: Config) -> Config:
    def positive(name, value, allow_zero=False):
        if value < 0 or (value == 0 and not allow_zero):
            raise ConfigError(f"--{name.replace('_', '-')}: must be {'>= 0' if allow_zero else '> 0'}, got {value}")

    for name in ("port", "metrics_port"):
        if not 0 <= getattr(config, name) <= 65535:
            raise ConfigError(f"--{name.replace('_', '-')}: not a port: {getattr(config, name)}")
    for name in ("workers", "upstream_connect_timeout", "upstream_idle_timeout", "client_idle_timeout",
                 "client_body_timeout", "max_header_size", "max_headers", "rate_burst",
                 "ws_max_message_size", "ws_idle_timeout", "ws_max_lifetime", "watch_timeout",
                 "watch_backoff_initial", "watch_backoff_max", "shutdown_timeout"):
        positive(name, getattr(config, name))
    for name in ("upstream_read_timeout", "upstream_connect_retries", "max_concurrent_per_sandbox",
                 "rate_per_sandbox", "drain_delay"):
        positive(name, getattr(config, name), allow_zero=True)
    if config.domain and not DOMAIN_RE.match(config.domain):
        raise ConfigError(f"--domain: not a lower-case DNS name: {config.domain!r}")
    if config.websocket_upstream not in WEBSOCKET_UPSTREAMS:
        raise ConfigError(f"--websocket-upstream: must be direct or apiserver, got {config.websocket_upstream!r}")
    if not config.namespace:
        raise ConfigError("--namespace: must not be empty")
    prefix = config.path_prefix
    if (len(prefix) < 2 or not prefix.startswith("/") or not prefix.endswith("/") or "//" in prefix
            or any(segment in (".", "..") or "%" in segment or "?" in segment for segment in prefix.split("/"))):
        raise ConfigError(f"--path-prefix: {prefix!r} must be an absolute path ending in '/', like /sandbox/, "
                          "without dot segments, '%' or '?'")
    if config.sandbox_id_label and not LABEL_KEY_RE.match(config.sandbox_id_label):
        raise ConfigError(f"--sandbox-id-label: {config.sandbox_id_label!r} is not a label key")
    for name in ("token_query_param", "token_cookie"):
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", getattr(config, name)):
            raise ConfigError(f"--{name.replace('_', '-')}: letters, digits, '_', '.', '-' only")
    if bool(config.tls_cert_file) != bool(config.tls_key_file):
        raise ConfigError("--tls-cert-file and --tls-key-file: give both (the certificate chain and its private key) "
                          "or neither")
    if not config.tls_cert_file and not config.allow_plain_http and not is_loopback(config.listen_host):
        raise ConfigError(
            f"--listen-host {config.listen_host or '(all addresses)'}: refusing to serve plain HTTP on a non-loopback "
            "address, where sandbox access tokens would cross the network in clear. Give --tls-cert-file and "
            "--tls-key-file, or listen on 127.0.0.1 behind a local TLS terminator, or set --allow-plain-http "
            f"({ENV_PREFIX}ALLOW_PLAIN_HTTP=true) when a TLS terminator in front reaches the gateway over a trusted link")
    return config


def is_loopback(host: str) -> bool:
    """Whether a listen address keeps the listener on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def load(argv=None) -> Config:
    """Parse flags (falling back to the environment) into a checked Config."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from .version import __version__

        print(__version__)
        raise SystemExit(0)
    values = vars(args)
    values.pop("version")
    for field, value in PROFILES[values["profile"]].items():
        if values[field] is None:
            values[field] = value
    # argparse converts string defaults (the environment's values) with the flag's type too.
    return _check(Config(**values))
