"""The sandbox access token: where a request carries it, removing it, and checking it.

The token travels in ``X-Access-Token``. Browsers cannot set headers on a WebSocket, so on a
WebSocket upgrade a query parameter or a cookie may carry it instead. Every carrier is removed
before the request is forwarded, whatever the request, so the token never reaches the sandbox.
The Pod holds either the token (annotation ``liteboxd.io/access-token``) or the lower-case hex
SHA-256 of it (``liteboxd.io/access-token-sha256``); both comparisons are constant-time.
"""
import hashlib
import hmac
from urllib.parse import unquote_plus

TOKEN_HEADER = "X-Access-Token"


def strip_query_param(raw_query: str, name: str):
    """Remove every ``name=...`` from a raw query string, leaving the rest byte for byte.

    Returns (first value found, decoded, or None; the remaining raw query).
    """
    if not raw_query:
        return None, raw_query
    found = None
    kept = []
    for item in raw_query.split("&"):
        key, _unused, value = item.partition("=")
        if unquote_plus(key) == name:
            if found is None:
                found = unquote_plus(value)
            continue
        kept.append(item)
    if len(kept) == raw_query.count("&") + 1:
        return None, raw_query
    return found, "&".join(kept)


def strip_cookie(cookie_headers, name: str):
    """Remove the cookie ``name`` from Cookie header values.

    Returns (its value or None; the remaining Cookie header value, or None when nothing is left).
    """
    found = None
    kept = []
    for header in cookie_headers:
        for pair in header.split(";"):
            pair = pair.strip()
            if not pair:
                continue
            key, _unused, value = pair.partition("=")
            if key.strip() == name:
                if found is None:
                    found = value.strip().strip('"')
                continue
            kept.append(pair)
    return found, ("; ".join(kept) or None)


def token_matches(token: str, plain, sha256_hex) -> bool:
    """Constant-time check of a presented token against the Pod's token or its SHA-256 (bytes)."""
    if not token or (plain is None and sha256_hex is None):
        return False
    presented = token.encode("utf-8", "surrogateescape")
    ok = False
    if plain is not None:
        ok |= hmac.compare_digest(presented, plain)
    if sha256_hex is not None:
        ok |= hmac.compare_digest(hashlib.sha256(presented).hexdigest().encode(), sha256_hex)
    return ok
