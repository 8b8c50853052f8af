# -*- coding: utf-8 -*-
# Copyright: (c) 2026, LiteBoxd platform team
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Small clients for the three ZeroTier HTTP APIs the collection talks to.

* the local service API of zerotier-one (``http://127.0.0.1:9993``, header ``X-ZT1-Auth``):
  ``GET /status``, ``GET/POST/DELETE /network/<nwid>``;
* the self-hosted network controller, served by zerotier-one under ``/controller``:
  ``/controller/network/<nwid>/member/<node>`` with a flat member object;
* ZeroTier Central (``https://api.zerotier.com/api/v1``, header ``Authorization: token ...``):
  ``/network/<nwid>/member/<node>`` with the writable member settings nested under ``config``.

Only the standard library and ansible's ``open_url`` are used. Every error is raised as
``ZeroTierError`` with a message meant for the user: which API, what it answered, and which
module option to look at.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import email.utils
import json
import re
import socket
import time

from ansible.module_utils.six.moves.urllib.error import HTTPError, URLError
from ansible.module_utils.urls import open_url

try:
    import netaddr
except ImportError:  # reported when addresses are checked
    netaddr = None

NETWORK_ID_PATTERN = re.compile(r"^[0-9a-fA-F]{16}$")
NODE_ID_PATTERN = re.compile(r"^[0-9a-fA-F]{10}$")

DEFAULT_SERVICE_URL = "http://127.0.0.1:9993"
DEFAULT_CENTRAL_URL = "https://api.zerotier.com/api/v1"
DEFAULT_AUTHTOKEN_FILE = "/var/lib/zerotier-one/authtoken.secret"

# Network status values reported by the service API (ZT_NETWORK_STATUS_* in ZeroTierOne.h).
STATUS_OK = "OK"
STATUS_REQUESTING_CONFIGURATION = "REQUESTING_CONFIGURATION"
STATUS_ACCESS_DENIED = "ACCESS_DENIED"
STATUS_NOT_FOUND = "NOT_FOUND"
STATUS_PORT_ERROR = "PORT_ERROR"
STATUS_CLIENT_TOO_OLD = "CLIENT_TOO_OLD"
STATUS_AUTHENTICATION_REQUIRED = "AUTHENTICATION_REQUIRED"


class ZeroTierError(Exception):
    """An API call failed; ``str(err)`` is the message for the user."""

    def __init__(self, msg, status=None):
        super(ZeroTierError, self).__init__(msg)
        self.status = status


def validate_network_id(value, option="network_id"):
    """Return the network id in lower case or raise ZeroTierError naming ``option``."""
    if not isinstance(value, str) or not NETWORK_ID_PATTERN.match(value):
        raise ZeroTierError(
            "%s must be a ZeroTier network id: exactly 16 hexadecimal characters "
            "(the controller's 10-digit address followed by 6 digits), got %r (%d characters)"
            % (option, value, len(value) if isinstance(value, str) else 0))
    return value.lower()


def validate_node_id(value, option="node_id"):
    """Return the node id in lower case or raise ZeroTierError naming ``option``."""
    if not isinstance(value, str) or not NODE_ID_PATTERN.match(value):
        raise ZeroTierError(
            "%s must be a ZeroTier node address: exactly 10 hexadecimal characters, got %r (%d characters)"
            % (option, value, len(value) if isinstance(value, str) else 0))
    return value.lower()


def canonical_ip_assignments(values, option="ip_assignments"):
    """Return sorted canonical address strings; raise ZeroTierError naming ``option`` on a bad one.

    The controller reports IPv6 addresses in full form and may reorder the list, so comparing
    canonical, sorted forms is what makes the member module idempotent.
    """
    if netaddr is None:
        raise ZeroTierError("%s: checking addresses needs the netaddr Python library on the controller" % option)
    result = []
    for value in values:
        try:
            result.append(netaddr.IPAddress(str(value).strip(), flags=netaddr.INET_PTON))
        except (netaddr.AddrFormatError, ValueError, TypeError):
            raise ZeroTierError(
                "%s: %r is not an IP address (give plain addresses such as 10.147.17.5, without a prefix length)"
                % (option, value))
    return [str(addr) for addr in sorted(set(result), key=lambda a: (a.version, int(a)))]


def read_token_file(path):
    try:
        with open(path) as handle:
            token = handle.read().strip()
    except (IOError, OSError) as exc:
        raise ZeroTierError(
            "cannot read the zerotier-one auth token from %s (api_token_file): %s. "
            "Is zerotier-one installed and running, and does the task run as root?" % (path, exc))
    if not token:
        raise ZeroTierError("the auth token file %s (api_token_file) is empty" % path)
    return token


def _api_message(body):
    """The most useful text in an error body: a JSON ``message``/``error`` field or the raw text."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else (body or "")
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        for key in ("message", "error", "errorMessage", "reason"):
            value = data.get(key)
            if isinstance(value, dict):
                value = value.get("message") or json.dumps(value, sort_keys=True)
            if value:
                return str(value)
    text = text.strip()
    return text[:500] if text else "(empty body)"


def _retry_after_seconds(value):
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date); None if absent/bad."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return int(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0, int(when.timestamp() - time.time() + 0.999))


class ApiClient(object):
    """JSON over HTTP with the error handling every ZeroTier API shares.

    ``token_option`` names the module option that holds the credential, so a 401/403 can say
    which one to fix. A 429 is retried after its Retry-After delay while the total wait stays
    within ``rate_limit_wait`` seconds; past that the call fails with the API's own message.
    """

    api_name = "ZeroTier API"

    def __init__(self, base_url, headers, token_option, timeout=10, validate_certs=True,
                 rate_limit_wait=60, sleep=time.sleep):
        self.base_url = base_url.rstrip("/")
        self.headers = dict(headers)
        self.token_option = token_option
        self.timeout = timeout
        self.validate_certs = validate_certs
        self.rate_limit_wait = rate_limit_wait
        self.sleep = sleep

    def request(self, method, path, body=None, missing_ok=False):
        """Return the decoded JSON answer; None for a 404 when ``missing_ok``."""
        url = self.base_url + path
        headers = dict(self.headers, Accept="application/json")
        data = None
        if body is not None:
            data = json.dumps(body)
            headers["Content-Type"] = "application/json"
        waited = 0
        while True:
            try:
                response = open_url(url, data=data, headers=headers, method=method, timeout=self.timeout,
                                    validate_certs=self.validate_certs, follow_redirects="safe")
                raw = response.read()
            except HTTPError as exc:
                raw = exc.read() if exc.fp is not None else b""
                message = _api_message(raw)
                if exc.code == 429:
                    delay = _retry_after_seconds(exc.headers.get("Retry-After") if exc.headers else None)
                    delay = 1 if delay is None else delay
                    if waited + delay <= self.rate_limit_wait:
                        self.sleep(delay)
                        waited += delay
                        continue
                    raise ZeroTierError(
                        "%s rate limit (HTTP 429) on %s %s: %s (asked to retry after %ss; already waited %ss of "
                        "rate_limit_wait=%ss)" % (self.api_name, method, path, message, delay, waited, self.rate_limit_wait),
                        status=429)
                if exc.code in (401, 403):
                    raise ZeroTierError(
                        "%s rejected the credentials (HTTP %d) on %s %s: %s. Check the %s option."
                        % (self.api_name, exc.code, method, path, message, self.token_option), status=exc.code)
                if exc.code == 404 and missing_ok:
                    return None
                raise ZeroTierError("%s answered HTTP %d to %s %s: %s"
                                    % (self.api_name, exc.code, method, path, message), status=exc.code)
            except (URLError, socket.error, ConnectionError) as exc:
                reason = getattr(exc, "reason", exc)
                raise ZeroTierError("cannot reach the %s at %s: %s" % (self.api_name, self.base_url, reason))
            if not raw.strip():
                return {}
            try:
                return json.loads(raw.decode("utf-8"))
            except ValueError:
                raise ZeroTierError("%s sent a non-JSON answer to %s %s: %s"
                                    % (self.api_name, method, path, _api_message(raw)))


class ServiceClient(ApiClient):
    """The local zerotier-one service API."""

    api_name = "zerotier-one service API"

    def __init__(self, token, base_url=DEFAULT_SERVICE_URL, token_option="api_token", **kwargs):
        super(ServiceClient, self).__init__(base_url, {"X-ZT1-Auth": token}, token_option, **kwargs)

    def node_status(self):
        return self.request("GET", "/status")

    def network(self, network_id):
        """The joined network's object, or None when this node has not joined it."""
        return self.request("GET", "/network/%s" % network_id, missing_ok=True)

    def join(self, network_id, settings=None):
        """Join (or update the writable settings of) a network; POST body is optional."""
        return self.request("POST", "/network/%s" % network_id, body=settings or {})

    def leave(self, network_id):
        return self.request("DELETE", "/network/%s" % network_id, missing_ok=True)


class MemberSettings(object):
    """The member fields the collection manages, the same for both controller APIs."""

    FIELDS = ("authorized", "name", "ip_assignments")

    @staticmethod
    def normalise(authorized, name, ip_assignments):
        return {
            "authorized": bool(authorized),
            "name": name or "",
            "ip_assignments": canonical_ip_assignments(ip_assignments or [], option="ipAssignments (from the API)"),
        }


class ControllerMembers(ApiClient):
    """Members on a self-hosted controller: a flat object at /controller/network/<nwid>/member/<node>."""

    api_name = "ZeroTier controller API"

    def __init__(self, token, base_url=DEFAULT_SERVICE_URL, token_option="api_token", **kwargs):
        super(ControllerMembers, self).__init__(base_url, {"X-ZT1-Auth": token}, token_option, **kwargs)

    @staticmethod
    def _path(network_id, node_id):
        return "/controller/network/%s/member/%s" % (network_id, node_id)

    @staticmethod
    def settings(member):
        return MemberSettings.normalise(member.get("authorized"), member.get("name"), member.get("ipAssignments"))

    def get(self, network_id, node_id):
        return self.request("GET", self._path(network_id, node_id), missing_ok=True)

    @staticmethod
    def body(changes):
        """Flat body: the controller ignores fields it does not know, so nothing may be nested."""
        mapping = {"authorized": "authorized", "name": "name", "ip_assignments": "ipAssignments"}
        return dict((mapping[key], value) for key, value in changes.items())

    def update(self, network_id, node_id, changes):
        return self.request("POST", self._path(network_id, node_id), body=self.body(changes))

    def delete(self, network_id, node_id):
        return self.request("DELETE", self._path(network_id, node_id), missing_ok=True)


class CentralMembers(ApiClient):
    """Members on ZeroTier Central: ``name`` at the top level, the rest under ``config``."""

    api_name = "ZeroTier Central API"

    def __init__(self, token, base_url=DEFAULT_CENTRAL_URL, token_option="api_token", **kwargs):
        super(CentralMembers, self).__init__(base_url, {"Authorization": "token %s" % token}, token_option,
                                             **kwargs)

    @staticmethod
    def _path(network_id, node_id):
        return "/network/%s/member/%s" % (network_id, node_id)

    @staticmethod
    def settings(member):
        config = member.get("config") or {}
        return MemberSettings.normalise(config.get("authorized"), member.get("name"), config.get("ipAssignments"))

    def get(self, network_id, node_id):
        return self.request("GET", self._path(network_id, node_id), missing_ok=True)

    @staticmethod
    def body(changes):
        body = {}
        if "name" in changes:
            body["name"] = changes["name"]
        config = {}
        if "authorized" in changes:
            config["authorized"] = changes["authorized"]
        if "ip_assignments" in changes:
            config["ipAssignments"] = changes["ip_assignments"]
        if config:
            body["config"] = config
        return body

    def update(self, network_id, node_id, changes):
        return self.request("POST", self._path(network_id, node_id), body=self.body(changes))

    def delete(self, network_id, node_id):
        return self.request("DELETE", self._path(network_id, node_id), missing_ok=True)


MEMBER_APIS = {"controller": (ControllerMembers, DEFAULT_SERVICE_URL),
               "central": (CentralMembers, DEFAULT_CENTRAL_URL)}


def member_client(api, token, base_url=None, **kwargs):
    cls, default_url = MEMBER_APIS[api]
    return cls(token, base_url=base_url or default_url, **kwargs)
