"""Header rewriting shared by the HTTP proxy and the WebSocket relay."""
from operator import itemgetter

from multidict import CIMultiDict

from .auth import TOKEN_HEADER
from .routing import INGRESS_HEADERS

# How header bytes become text and back: bytes that are not UTF-8 pass through unchanged.
HEADER_ENCODING = ("utf-8", "surrogateescape")
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
HOP_BY_HOP_FIELDS = frozenset(name.encode() for name in HOP_BY_HOP)
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


def _dropped_request_headers(trust_forwarded: bool, extra_drop: frozenset) -> frozenset:
    """Lower-case names never passed on as they came (some are set again by the gateway)."""
    key = (trust_forwarded, extra_drop)
    dropped = _DROPPED.get(key)
    if dropped is None:
        # Trusted: the client's X-Forwarded-For is extended, its Proto and Host kept.
        forwarded = frozenset(("x-forwarded-for",)) if trust_forwarded else FORWARDED_HEADERS
        dropped = _DROPPED[key] = HOP_BY_HOP | GATEWAY_REQUEST_HEADERS | {"cookie"} | extra_drop | forwarded
    return dropped


_DROPPED = {}


def forwarded_request_fields(headers, cookies, client_host: str, config, route, extra_drop=frozenset()) -> list:
    """Header fields for the sandbox as (name, value) text, in order: hop-by-hop, routing and token
    carriers removed, the remaining cookies, X-Forwarded-* set."""
    dropped = _dropped_request_headers(config.trust_forwarded_headers, extra_drop)
    if "Connection" in headers:
        dropped = dropped | connection_tokens(headers)
    fields = [(name, value) for name, value in headers.items() if name.lower() not in dropped]
    for cookie in cookies:
        fields.append(("Cookie", cookie))
    host = headers.get("Host", "")
    if config.trust_forwarded_headers:
        previous = ", ".join(headers.getall("X-Forwarded-For", ()))
        fields.append(("X-Forwarded-For", f"{previous}, {client_host}" if previous else client_host))
        kept = {name.lower() for name, _value in fields}
        if "x-forwarded-proto" not in kept:
            fields.append(("X-Forwarded-Proto", "https" if config.tls_cert_file else "http"))
        if "x-forwarded-host" not in kept:
            fields.append(("X-Forwarded-Host", host))
    else:
        fields.append(("X-Forwarded-For", client_host))
        fields.append(("X-Forwarded-Proto", "https" if config.tls_cert_file else "http"))
        if host:
            fields.append(("X-Forwarded-Host", host))
    if route.prefix:
        fields.append(("X-Forwarded-Prefix", route.prefix))
    return fields


_field_name = itemgetter(0)


def downstream_response_fields(fields):
    """The sandbox's response header fields, (name, value) bytes as parsed, for the client.

    Returns (the fields without hop-by-hop ones, whether a Content-Length is among them, whether the
    body is framed at all: Content-Length or Transfer-Encoding). Bytes throughout: a response head
    passes through without decoding and encoding each field.
    """
    lowered = list(map(bytes.lower, map(_field_name, fields)))
    has_length = b"content-length" in lowered
    framed = has_length or b"transfer-encoding" in lowered
    if HOP_BY_HOP_FIELDS.isdisjoint(lowered):
        return fields, has_length, framed
    connections = lowered.count(b"connection")
    at = lowered.index(b"connection") if connections == 1 else -1
    dropped = HOP_BY_HOP_FIELDS
    if at >= 0 and fields[at][1].lower() == b"keep-alive":
        # The usual lone "Connection: keep-alive" names a hop-by-hop field only; when it is the
        # only hop-by-hop field, it alone goes.
        if HOP_BY_HOP_FIELDS.isdisjoint(lowered[:at]) and HOP_BY_HOP_FIELDS.isdisjoint(lowered[at + 1:]):
            return fields[:at] + fields[at + 1:], has_length, framed
    elif connections:
        dropped = dropped | {token.strip() for low, (_name, value) in zip(lowered, fields) if low == b"connection"
                             for token in value.lower().split(b",")}
    return [field for field, low in zip(fields, lowered) if low not in dropped], has_length, framed
