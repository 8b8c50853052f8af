"""The ZeroTier stub against what zerotier-one 1.14.1 was observed to do (docs/zerotier.md, "What the
real daemon does"). Each test names the observed behaviours it holds by their ids ([AUTH-1], ...);
test_every_observed_behaviour_is_held_or_named_not_modelled checks the docs' table against them.

Raw HTTP, as curl drove the real daemon; timings are the observed ones scaled down.
"""
import ast
import json
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.lib.collection import REPO
from tests.lib.zerotier_stub import Timings, World, device_name

NWID = "8056c2e21c000001"
CONTROLLER = NWID[:10]
NODE = "0deadbeef1"
FAST = dict(first_answer=0.3, authorize_delay=0.6, deauthorize_delay=1.5, recreate_delay=0.5)


@pytest.fixture
def world():
    world = World(Timings(**FAST))
    yield world
    world.stop()


@pytest.fixture
def controller(world):
    daemon = world.daemon(CONTROLLER)
    daemon.add_network(NWID, "10.147.17.0/24", private=True)
    return daemon


@pytest.fixture
def node(world, controller):
    return world.daemon(NODE)


def call(server, method, path, body=None, token=None, headers=None):
    """(status, raw body, content type) of one request, as curl shows it."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(server.url + path, data=data, method=method)
    if token is not False:
        request.add_header("X-ZT1-Auth", token or server.token)
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read(), response.headers.get("Content-Type")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get("Content-Type")


def get_json(server, path):
    status, raw = call(server, "GET", path)[:2]
    assert status == 200, (path, status, raw)
    return json.loads(raw)


def statuses_until(server, network_id, wanted, timeout=10.0):
    """Poll GET /network/<nwid>; return (seconds until ``wanted``, the distinct statuses seen, last object)."""
    start = time.monotonic()
    seen = []
    while True:
        obj = get_json(server, "/network/" + network_id)
        if not seen or seen[-1] != obj["status"]:
            seen.append(obj["status"])
        if obj["status"] == wanted:
            return time.monotonic() - start, seen, obj
        assert time.monotonic() - start < timeout, "no %s within %ss: %s" % (wanted, timeout, seen)
        time.sleep(0.05)


def join(server, network_id=NWID, body=None):
    status, raw = call(server, "POST", "/network/" + network_id, body or {})[:2]
    assert status == 200
    return json.loads(raw)


def authorize(controller, node_id=NODE, value=True, network_id=NWID):
    status, raw = call(controller, "POST", "/controller/network/%s/member/%s" % (network_id, node_id),
                       {"authorized": value})[:2]
    assert status == 200
    return json.loads(raw)


# -- auth ---------------------------------------------------------------------------------------

def test_token_in_header_query_or_bearer_and_401_with_an_empty_object(node):
    """[AUTH-1] X-ZT1-Auth, ?auth= or Authorization: Bearer. [AUTH-2] a wrong or missing token: 401 `{}`."""
    assert call(node, "GET", "/status")[0] == 200
    assert call(node, "GET", "/status?auth=" + node.token, token=False)[0] == 200
    assert call(node, "GET", "/status", token=False, headers={"Authorization": "Bearer " + node.token})[0] == 200
    for token in ("wrong", False):
        status, raw, content_type = call(node, "GET", "/status", token=token)
        assert (status, raw, content_type) == (401, b"{}", "application/json")


def test_the_api_listens_on_loopback(node):
    """[AUTH-3] the API answers on 127.0.0.1 (allowManagementFrom is not modelled: the collection keeps the
    controller API on loopback and runs the member calls on the controller host)."""
    assert node.url.startswith("http://127.0.0.1:")


# -- service API --------------------------------------------------------------------------------

def test_status_fields(node):
    """[SVC-1] GET /status: address, clock, config.settings, online, planet, identity, version 1.14.1."""
    status = get_json(node, "/status")
    assert set(status) >= {"address", "clock", "config", "online", "planetWorldId", "planetWorldTimestamp",
                           "publicIdentity", "tcpFallbackActive", "version", "versionMajor", "versionMinor",
                           "versionRev", "versionBuild"}
    assert status["address"] == NODE and status["version"] == "1.14.1" and "settings" in status["config"]
    assert status["publicIdentity"].startswith(NODE + ":0:")


def test_network_list_and_the_404s_of_the_service_api(node):
    """[SVC-2] GET /network: an array, [] when none. [SVC-3] a network not joined: 404 `{}`.
    [SVC-4] an id that is not 16 hex: 404 with an empty body (no route matches)."""
    assert get_json(node, "/network") == []
    assert call(node, "GET", "/network/" + NWID)[:2] == (404, b"{}")
    assert call(node, "GET", "/network/8056c2e21c00001")[:2] == (404, b"")
    assert call(node, "GET", "/network/not-hex-at-all!!")[:2] == (404, b"")
    join(node)
    assert [n["id"] for n in get_json(node, "/network")] == [NWID]


def test_join_answers_requesting_configuration_with_the_device_name_already_set(node):
    """[SVC-5] POST /network/<nwid> (body `{}` or settings): right after the join REQUESTING_CONFIGURATION and
    portDeviceName already set. [SVC-8] the network object's fields; the device name is "zt" + 8 base32
    characters derived from the network id, the same on every node."""
    obj = join(node)
    assert obj["status"] == "REQUESTING_CONFIGURATION"
    assert obj["portDeviceName"] == device_name(NWID) == "ztmjfmfyq5"
    assert re.match(r"^zt[a-z2-7]{8}$", obj["portDeviceName"])
    assert set(obj) >= {"allowDNS", "allowDefault", "allowGlobal", "allowManaged", "assignedAddresses", "bridge",
                        "broadcastEnabled", "dhcp", "dns", "id", "mac", "mtu", "multicastSubscriptions", "name",
                        "netconfRevision", "nwid", "portDeviceName", "portError", "routes", "status", "type"}
    assert obj["type"] == "PRIVATE"
    again = join(node, body={"allowDefault": False, "allowDNS": True})
    assert again["allowDNS"] is True and again["portDeviceName"] == obj["portDeviceName"]


def test_leave_answers_result_true_and_an_empty_object_when_not_joined(node):
    """[SVC-6] DELETE of a joined network: 200 {"result":true}. [SVC-7] not joined: 200 `{}`."""
    join(node)
    assert call(node, "DELETE", "/network/" + NWID)[:2] == (200, b'{"result": true}')
    assert call(node, "DELETE", "/network/" + NWID)[:2] == (200, b"{}")
    assert get_json(node, "/network") == []


# -- status over time ---------------------------------------------------------------------------

def test_private_network_denies_an_unauthorized_node_after_the_first_answer(node):
    """[TIME-1] join -> REQUESTING_CONFIGURATION -> ACCESS_DENIED (after `first_answer`, 1-4 s observed).
    [TIME-6] a failed join stays joined until DELETE."""
    join(node)
    elapsed, seen = statuses_until(node, NWID, "ACCESS_DENIED")[:2]
    assert seen == ["REQUESTING_CONFIGURATION", "ACCESS_DENIED"] and elapsed >= 0
    time.sleep(0.3)
    assert [n["status"] for n in get_json(node, "/network")] == ["ACCESS_DENIED"]


def test_a_denied_node_stays_denied_for_a_while_after_its_authorization(node, controller):
    """[TIME-2] after the authorization, a node that was already denied keeps reporting ACCESS_DENIED
    (`authorize_delay`, 0.7-2.3 s observed), then OK with its address. [REC-1] the controller made the
    denied node's record itself: unauthorized, no addresses, no name."""
    join(node)
    statuses_until(node, NWID, "ACCESS_DENIED")
    record = get_json(controller, "/controller/network/%s/member/%s" % (NWID, NODE))
    assert record["authorized"] is False and record["ipAssignments"] == [] and "name" not in record
    authorize(controller)
    assert get_json(node, "/network/" + NWID)["status"] == "ACCESS_DENIED"
    elapsed, seen, obj = statuses_until(node, NWID, "OK")
    assert seen == ["ACCESS_DENIED", "OK"]
    assert elapsed >= FAST["authorize_delay"] * 0.8
    assert obj["assignedAddresses"] and obj["assignedAddresses"][0].startswith("10.147.17.")


def test_an_authorization_before_the_first_answer_is_seen_at_once(node, controller):
    """[TIME-2] (the other order) a node authorized before it asked gets OK with its first answer."""
    authorize(controller)
    join(node)
    seen = statuses_until(node, NWID, "OK")[1]
    assert seen == ["REQUESTING_CONFIGURATION", "OK"]


def test_a_deauthorized_node_reports_ok_with_its_address_then_denied_and_keeps_it(node, controller):
    """[TIME-3] after de-authorization the node reports OK with its address (`deauthorize_delay`, 29-58 s
    observed), then ACCESS_DENIED still listing assignedAddresses. (That traffic stops at once and the IP
    stays on the device is held by the Molecule scenario's stand-in data path, side_effect.yml.)"""
    authorize(controller)
    join(node)
    ok = statuses_until(node, NWID, "OK")[2]
    authorize(controller, value=False)
    right_after = get_json(node, "/network/" + NWID)
    assert right_after["status"] == "OK" and right_after["assignedAddresses"] == ok["assignedAddresses"]
    elapsed, denied = statuses_until(node, NWID, "ACCESS_DENIED")[::2]
    assert elapsed >= FAST["deauthorize_delay"] * 0.8
    assert denied["assignedAddresses"] == ok["assignedAddresses"]


def test_unknown_network_on_a_live_controller_is_not_found(node):
    """[TIME-4] a network whose controller is alive but does not know it: NOT_FOUND (about 2 s observed)."""
    join(node, CONTROLLER + "0000ff")
    seen = statuses_until(node, CONTROLLER + "0000ff", "NOT_FOUND")[1]
    assert seen == ["REQUESTING_CONFIGURATION", "NOT_FOUND"]


def test_a_network_whose_controller_does_not_exist_requests_configuration_for_ever(node):
    """[TIME-5] a wrong 10-hex controller prefix: REQUESTING_CONFIGURATION for ever, never NOT_FOUND."""
    network_id = "a1b2c3d4e5000001"
    join(node, network_id)
    deadline = time.monotonic() + FAST["first_answer"] * 5
    while time.monotonic() < deadline:
        assert get_json(node, "/network/" + network_id)["status"] == "REQUESTING_CONFIGURATION"
        time.sleep(0.1)


# -- controller API -----------------------------------------------------------------------------

def test_controller_status_networks_and_a_new_network(controller):
    """[CTL-1] GET /controller. [CTL-2] GET /controller/network: ids. [CTL-3] POST
    /controller/network/<address>______ makes a network whose id is the address + 6 random hex.
    [CTL-4] GET /controller/network/<nwid>: its fields, or 404 with an empty body."""
    info = get_json(controller, "/controller")
    assert info["controller"] is True and info["apiVersion"] == 4 and info["databaseReady"] is True
    assert get_json(controller, "/controller/network") == [NWID]
    status, raw = call(controller, "POST", "/controller/network/%s______" % CONTROLLER, {"name": "second"})[:2]
    created = json.loads(raw)
    assert status == 200 and re.match("^%s[0-9a-f]{6}$" % CONTROLLER, created["id"]) and created["name"] == "second"
    assert sorted(get_json(controller, "/controller/network")) == sorted([NWID, created["id"]])
    network = get_json(controller, "/controller/network/" + NWID)
    assert set(network) >= {"authTokens", "capabilities", "creationTime", "dns", "enableBroadcast", "id",
                            "ipAssignmentPools", "mtu", "multicastLimit", "name", "nwid", "objtype", "private",
                            "revision", "routes", "rules", "ssoEnabled", "tags", "v4AssignMode", "v6AssignMode"}
    assert call(controller, "GET", "/controller/network/%s0000ff" % CONTROLLER)[:2] == (404, b"")


def test_member_calls_and_their_empty_404s(controller):
    """[CTL-5] GET …/member: {node: revision}. [CTL-6] a member never seen: 404, empty body. [CTL-7] a member
    of an unknown network: 404, empty body. [CTL-8] POST creates or updates, flat, unknown fields ignored,
    answers the full object. [CTL-9] POST on an unknown network: 404, empty body. [CTL-10] DELETE answers
    the deleted object, or 404 with an empty body. [CTL-11] the member's fields; `name` once it is set."""
    path = "/controller/network/%s/member/%s" % (NWID, NODE)
    unknown = "/controller/network/%s0000ff/member/%s" % (CONTROLLER, NODE)
    assert call(controller, "GET", path)[:2] == (404, b"")
    assert call(controller, "GET", unknown)[:2] == (404, b"")
    assert call(controller, "POST", unknown, {"authorized": True})[:2] == (404, b"")
    status, raw = call(controller, "POST", path, {"authorized": True, "config": {"name": "nested"}, "bogus": 1})[:2]
    member = json.loads(raw)
    assert status == 200 and member["authorized"] is True and "name" not in member and "bogus" not in member
    assert set(member) >= {"activeBridge", "address", "authenticationExpiryTime", "authorized", "capabilities",
                           "creationTime", "id", "identity", "ipAssignments", "lastAuthorizedCredential",
                           "lastAuthorizedCredentialType", "lastAuthorizedTime", "lastDeauthorizedTime",
                           "noAutoAssignIps", "nwid", "objtype", "revision", "ssoExempt", "tags", "vMajor",
                           "vMinor", "vProto", "vRev"}
    named = json.loads(call(controller, "POST", path, {"name": "egress-1"})[1])
    assert named["name"] == "egress-1"
    assert get_json(controller, "/controller/network/%s/member" % NWID) == {NODE: named["revision"]}
    status, raw = call(controller, "DELETE", path)[:2]
    assert status == 200 and json.loads(raw)["name"] == "egress-1"
    assert call(controller, "DELETE", path)[:2] == (404, b"")


def test_a_member_deleted_while_its_node_is_joined_comes_back_bare(node, controller):
    """[REC-2] a member DELETE while the node is still joined is undone (`recreate_delay`, about 3 s observed):
    re-created, unauthorized, no name."""
    path = "/controller/network/%s/member/%s" % (NWID, NODE)
    call(controller, "POST", path, {"authorized": True, "name": "egress-1"})
    join(node)
    statuses_until(node, NWID, "OK")
    assert call(controller, "DELETE", path)[0] == 200
    assert call(controller, "GET", path)[:2] == (404, b"")
    deadline = time.monotonic() + 10
    while call(controller, "GET", path)[0] == 404:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    again = get_json(controller, path)
    assert again["authorized"] is False and "name" not in again and again["ipAssignments"] == []


def test_revision_moves_without_an_api_write(node, controller):
    """[REC-3] the controller records the node's version: `revision` changes with no API write."""
    path = "/controller/network/%s/member/%s" % (NWID, NODE)
    before = json.loads(call(controller, "POST", path, {"authorized": True})[1])
    join(node)
    statuses_until(node, NWID, "OK")
    after = get_json(controller, path)
    assert after["revision"] > before["revision"] and after["vMajor"] == 1 and after["vMinor"] == 14


def test_ipv6_is_stored_compressed_and_the_pool_fills_an_empty_member(node, controller):
    """[REC-4] IPv6 in ipAssignments is stored compressed. [REC-5] with v4AssignMode.zt and no ipAssignments
    the controller writes a pool address into the member's ipAssignments, stable for a node id."""
    path = "/controller/network/%s/member/%s" % (NWID, NODE)
    stored = json.loads(call(controller, "POST", path, {"ipAssignments": ["fd00:0:0:0:0:0:0:11"]})[1])
    assert stored["ipAssignments"] == ["fd00::11"]
    authorize(controller)
    join(node)
    obj = statuses_until(node, NWID, "OK")[2]
    pool = [ip for ip in get_json(controller, path)["ipAssignments"] if "." in ip]
    assert len(pool) == 1 and obj["assignedAddresses"] == [pool[0] + "/24"]
    # Stable for a node id: the same node on a fresh controller gets the same pool address.
    other = World(Timings(**FAST))
    try:
        fresh = other.daemon(CONTROLLER)
        fresh.add_network(NWID, "10.147.17.0/24", private=True)
        authorize(fresh)
        joined = other.daemon(NODE)
        join(joined)
        assert statuses_until(joined, NWID, "OK")[2]["assignedAddresses"] == [pool[0] + "/24"]
    finally:
        other.stop()


# -- the index ----------------------------------------------------------------------------------

NOT_MODELLED = {
    # id: why the stub does not hold it, and what does
    "PROC-1": "a process exit, not an API answer: the stand-in daemon aborts on SIGTERM with "
              "--abort-on-sigterm and the Molecule scenario (side_effect.yml) restarts and stops it",
}


def _observed_ids():
    """Ids and 'held by' cells of the table in docs/zerotier.md."""
    text = (Path(REPO) / "docs" / "zerotier.md").read_text()
    rows = re.findall(r"^\| `?([A-Z]+-\d+)`? \|[^|]*\|([^|]*)\|\s*$", text, re.M)
    assert rows, "docs/zerotier.md has no table of observed behaviours"
    return dict(rows)


def _test_docstrings():
    docs = {}
    for path in list((Path(REPO) / "tests").rglob("test_zerotier*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                docs[node.name] = ast.get_docstring(node) or ""
    return docs


def test_every_observed_behaviour_is_held_or_named_not_modelled():
    """Every row of docs/zerotier.md's table names the tests that hold it (each names the id in its
    docstring), or is in NOT_MODELLED here with the reason."""
    observed = _observed_ids()
    docstrings = _test_docstrings()
    for behaviour, held_by in observed.items():
        named = re.findall(r"`(test_\w+)`", held_by)
        if behaviour in NOT_MODELLED:
            assert "not modelled" in held_by.lower(), behaviour
            continue
        assert named, "%s names no test" % behaviour
        for test in named:
            assert test in docstrings, "%s: no test called %s" % (behaviour, test)
            assert "[%s]" % behaviour in docstrings[test], "%s does not name %s" % (test, behaviour)
    cited = set(re.findall(r"\[([A-Z]+-\d+)\]", " ".join(docstrings.values())))
    assert cited <= set(observed), "tests name behaviours the docs do not list: %s" % (cited - set(observed))
    assert set(NOT_MODELLED) <= set(observed)
