"""Header rewriting shared by the HTTP proxy and the WebSocket relay."""
from multidict import CIMultiDict

from .auth import TOKEN_HEADER
from .routing import INGRESS_HEADERS

# RFC 9110 §7.6.1 connection-specific fields, plus Proxy-Connection which old clients still send.
HOP_BY_HOP = frozenset(
    name.lower()
    for name in ("Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Connection",
                 "TE", "Trailer", "Transfer-Encoding", "Upgrade")
)
# Never forwarded to a sandbox: routing and credentials for the gateway itself, and headers the
# gateway sets from what it saw.
GATEWAY_REQUEST_HEADERS = frozenset(
    name.lower() for name in (*INGRESS_HEADERS, TOKEN_HEADER, "Host", "X-Forwarded-Prefix")
)
FORWARDED_HEADERS = frozenset(("x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded"))
# aiohttp's WebSocket client writes the handshake headers itself.
WEBSOCKET_HANDSHAKE = frozenset(("sec-websocket-key", "sec-websocket-version", "sec-websocket-protocol",
                                 "sec-websocket-extensions", "sec-websocket-accept"))


def connection_tokens(headers) -> set:
    """The tokens of every Connection header, lower-cased (the field is a comma-separated list)."""
    tokens = set()
    for value in headers.getall("Connection", ()):
        tokens.update(token.strip().lower() for token in value.split(",") if token.strip())
    return tokens


def is_websocket_upgrade(method: str, headers) -> bool:
    if method != "GET" or "upgrade" not in connection_tokens(headers):
        return False
    return any(token.strip().lower() == "websocket"
               for value in headers.getall("Upgrade", ()) for token in value.split(","))


def without_hop_by_hop(headers, drop=frozenset()) -> CIMultiDict:
    """A copy of headers without hop-by-hop fields, fields named in Connection, and ``drop``."""
    dropped = HOP_BY_HOP | connection_tokens(headers) | drop
    return CIMultiDict((name, value) for name, value in headers.items() if name.lower() not in dropped)


def upstream_request_headers(headers, cookies, client_host: str, config, route, extra_drop=frozenset()) -> CIMultiDict:
    """Headers for the sandbox: hop-by-hop, routing and token carriers removed, X-Forwarded-* set."""
    forwarded = without_hop_by_hop(headers, GATEWAY_REQUEST_HEADERS | {"cookie"} | extra_drop
                                   | (frozenset() if config.trust_forwarded_headers else FORWARDED_HEADERS))
    for cookie in cookies:
        forwarded.add("Cookie", cookie)
    host = headers.get("Host", "")
    if config.trust_forwarded_headers:
        previous = ", ".join(headers.getall("X-Forwarded-For", ()))
        forwarded.popall("X-Forwarded-For", None)
        forwarded["X-Forwarded-For"] = f"{previous}, {client_host}" if previous else client_host
        forwarded.setdefault("X-Forwarded-Proto", "http")
        forwarded.setdefault("X-Forwarded-Host", host)
    else:
        forwarded["X-Forwarded-For"] = client_host
        forwarded["X-Forwarded-Proto"] = "http"
        if host:
            forwarded["X-Forwarded-Host"] = host
    if route.prefix:
        forwarded["X-Forwarded-Prefix"] = route.prefix
    return forwarded


def downstream_response_headers(fields) -> list:
    """The sandbox's response header fields, (name, value) pairs, for the client: hop-by-hop removed."""
    named = [value for name, value in fields if name.lower() == "connection"]
    dropped = HOP_BY_HOP.union(token.strip().lower() for value in named for token in value.split(","))
    return [(name, value) for name, value in fields if name.lower() not in dropped]
