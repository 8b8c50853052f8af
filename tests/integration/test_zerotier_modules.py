"""zerotier_network and zerotier_member, run as Ansible runs them, against the ZeroTier stub.

zerotier-one cannot be installed here; tests/lib/zerotier_stub.py behaves like zerotier-one 1.14.1
was observed to (docs/zerotier.md): one daemon is the network's controller, another is the node,
with the real daemon's status sequence on short timings. Tests name the observed behaviours they
rely on ([TIME-2], ...) and the differences of issue 16 they reproduce.
"""
import time

import pytest

from tests.integration.conftest import ZEROTIER_NODE, ZEROTIER_NWID
from tests.lib.modules import run_module
from tests.lib.zerotier_stub import Join, device_name

NWID = ZEROTIER_NWID
UNKNOWN_NWID = "8056c2e21c0000ff"
NO_CONTROLLER_NWID = "a1b2c3d4e5000001"
CENTRAL_NWID = "9bee8941b5000001"
NODE = ZEROTIER_NODE


def network_args(daemon, **extra):
    args = dict(network_id=NWID, api_url=daemon.url, api_token=daemon.token, poll_interval=0.05, wait_timeout=30)
    args.update(extra)
    return args


def member_args(server, **extra):
    if hasattr(server, "api_url"):
        args = dict(api="central", api_url=server.api_url, api_token=server.token, network_id=CENTRAL_NWID)
    else:
        args = dict(api="controller", api_url=server.url, api_token=server.token, network_id=NWID)
    args.update(node_id=NODE)
    args.update(extra)
    return args


def authorize(world, **extra):
    return run_module("zerotier_member", member_args(world.controller, authorized=True, **extra))


def query(world, daemon=None, **extra):
    return run_module("zerotier_network", network_args(daemon or world.node, state="query", **extra))


def wait_for_status(world, status, daemon=None, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        result = query(world, daemon)
        if result["status"] == status:
            return result
        assert time.monotonic() < deadline, "no %s: %s" % (status, result["status"])
        time.sleep(0.1)


def warnings(result):
    """The warning texts of a module result (plain strings, or ansible-core's structured summaries)."""
    return [w if isinstance(w, str) else w["event"]["msg"] for w in result.get("warnings", [])]


def member_path(network_id=NWID, node=NODE):
    return "/controller/network/%s/member/%s" % (network_id, node)


# -- zerotier_network ---------------------------------------------------------------------------

def test_join_waits_for_ok_with_address_then_is_idempotent(world):
    """[TIME-2] an authorization before the first answer is seen at once; [REC-5] the address comes from
    the pool."""
    authorize(world)
    result = run_module("zerotier_network", network_args(world.node))
    assert result["changed"] is True
    assert result["status"] == "OK"
    assert result["node_id"] == NODE
    assert result["port_device_name"] == device_name(NWID)
    pool_address = world.controller.controller.members[(NWID, NODE)]["ipAssignments"][0]
    assert result["assigned_addresses"] == [pool_address + "/24"]
    assert result["addresses"] == [pool_address]
    polls = [r for r in world.node.requests if r["method"] == "GET" and r["path"] == "/network/" + NWID]
    assert len(polls) > 1  # it waited through REQUESTING_CONFIGURATION

    world.node.requests.clear()
    again = run_module("zerotier_network", network_args(world.node))
    assert again["changed"] is False
    assert again["assigned_addresses"] == [pool_address + "/24"]
    assert world.node.mutating_requests() == []


def test_the_device_name_is_returned_from_the_join_on(world):
    """[SVC-5] portDeviceName is set right after the join, while REQUESTING_CONFIGURATION (issue 16, item 6)."""
    result = run_module("zerotier_network", network_args(world.node, wait=False))
    assert result["status"] == "REQUESTING_CONFIGURATION"
    assert result["port_device_name"] == device_name(NWID)


def test_every_request_carries_the_service_token(world):
    authorize(world)
    run_module("zerotier_network", network_args(world.node))
    assert world.node.requests and all(r["headers"].get("x-zt1-auth") == world.node.token
                                       for r in world.node.requests)


def test_check_mode_predicts_join_without_mutating_and_diff_shows_it(world):
    result = run_module("zerotier_network", network_args(world.node, allow_default=False), check=True, diff=True)
    assert result["changed"] is True
    assert result["joined"] is True
    assert result["diff"] == {"before": {"joined": False, "allowDefault": None},
                              "after": {"joined": True, "allowDefault": False}}
    assert world.node.mutating_requests() == []
    assert world.node.node.joins == {}

    authorize(world)
    real = run_module("zerotier_network", network_args(world.node, allow_default=False), diff=True)
    assert real["changed"] is True and real["diff"] == result["diff"]

    world.node.requests.clear()
    converged = run_module("zerotier_network", network_args(world.node, allow_default=False), check=True, diff=True)
    assert converged["changed"] is False
    assert converged["diff"]["before"] == converged["diff"]["after"]
    assert world.node.mutating_requests() == []


def test_changed_local_setting_is_posted_alone(world):
    authorize(world)
    run_module("zerotier_network", network_args(world.node))
    world.node.requests.clear()
    result = run_module("zerotier_network", network_args(world.node, allow_global=True), diff=True)
    assert result["changed"] is True
    assert result["diff"] == {"before": {"joined": True, "allowGlobal": False},
                              "after": {"joined": True, "allowGlobal": True}}
    posts = world.node.mutating_requests()
    assert [(r["method"], r["body"]) for r in posts] == [("POST", {"allowGlobal": True})]
    assert result["network"]["allowGlobal"] is True


def test_leave_then_leave_again_changes_nothing(world):
    """[SVC-6] DELETE of a joined network; [SVC-3] then GET answers 404 `{}`: nothing more to do."""
    authorize(world)
    run_module("zerotier_network", network_args(world.node))
    world.node.requests.clear()
    check = run_module("zerotier_network", network_args(world.node, state="absent"), check=True, diff=True)
    assert check["changed"] is True
    assert check["diff"] == {"before": {"joined": True}, "after": {"joined": False}}
    assert world.node.mutating_requests() == [] and NWID in world.node.node.joins

    left = run_module("zerotier_network", network_args(world.node, state="absent"))
    assert left["changed"] is True and left["joined"] is False
    assert [(r["method"], r["path"]) for r in world.node.mutating_requests()] == [("DELETE", "/network/" + NWID)]
    assert NWID not in world.node.node.joins

    again = run_module("zerotier_network", network_args(world.node, state="absent"))
    assert again["changed"] is False


def test_query_reports_without_joining(world):
    result = query(world)
    assert result["changed"] is False and result["joined"] is False and result["status"] == ""
    assert world.node.mutating_requests() == []


def test_waiting_right_after_an_authorization_outlasts_the_late_access_denied(make_world):
    """Issue 16, item 1. [TIME-1] the unauthorized node is denied; [TIME-2] after its authorization it
    keeps reporting ACCESS_DENIED for a while. Waiting right after the authorization must not take that
    ACCESS_DENIED as final (the settle window)."""
    world = make_world(authorize_delay=2.0)
    run_module("zerotier_network", network_args(world.node, wait=False))
    wait_for_status(world, "ACCESS_DENIED")
    authorize(world)
    result = run_module("zerotier_network", network_args(world.node))
    assert result["status"] == "OK" and result["addresses"]
    statuses = [r for r in world.node.requests if r["path"] == "/network/" + NWID]
    assert len(statuses) > 2  # it read ACCESS_DENIED and went on


def test_access_denied_is_final_once_the_settle_window_has_passed(world):
    """[TIME-1] [TIME-6] an unauthorized node stays denied (and joined): the module fails naming the node
    and the network once ACCESS_DENIED has outlasted `settle`."""
    started = time.monotonic()
    result = run_module("zerotier_network", network_args(world.node, settle=1.0), expect_fail=True)
    assert time.monotonic() - started >= 1.0
    assert "authorize node %s on network %s" % (NODE, NWID) in result["msg"]
    assert result["zerotier_status"] == "ACCESS_DENIED"
    assert result["changed"] is True  # the join happened and stays
    assert NWID in world.node.node.joins


def test_access_denied_wait_times_out_with_the_authorize_message(world):
    result = run_module("zerotier_network", network_args(world.node, wait_for_authorization=True, wait_timeout=2,
                                                         poll_interval=0.2), expect_fail=True)
    assert result["msg"].startswith("timed out after 2s waiting for network %s" % NWID)
    assert "authorize node %s on network %s" % (NODE, NWID) in result["msg"]


def test_authorizing_while_waiting_lets_the_join_finish(world):
    run_module("zerotier_network", network_args(world.node, wait=False))
    wait_for_status(world, "ACCESS_DENIED")
    authorize(world, ip_assignments=["10.147.17.77"])
    result = run_module("zerotier_network", network_args(world.node, wait_for_authorization=True))
    assert result["status"] == "OK" and result["addresses"] == ["10.147.17.77"]


def test_unknown_network_is_not_found(world):
    """[TIME-4] a live controller that does not know the network answers NOT_FOUND."""
    result = run_module("zerotier_network", network_args(world.node, network_id=UNKNOWN_NWID), expect_fail=True)
    assert "NOT_FOUND" in result["msg"] and UNKNOWN_NWID in result["msg"] and "network_id" in result["msg"]


def test_a_controller_that_never_answers_is_named_with_network_id(world):
    """Issue 16, item 4. [TIME-5] a network id whose controller does not exist stays
    REQUESTING_CONFIGURATION for ever: the timeout names that controller and says to check network_id."""
    result = run_module("zerotier_network", network_args(world.node, network_id=NO_CONTROLLER_NWID, wait_timeout=1),
                        expect_fail=True)
    assert result["zerotier_status"] == "REQUESTING_CONFIGURATION"
    assert "controller %s" % NO_CONTROLLER_NWID[:10] in result["msg"]
    assert "check network_id" in result["msg"]


@pytest.mark.parametrize("status, words", [
    ("PORT_ERROR", "/dev/net/tun"),
    ("CLIENT_TOO_OLD", "newer zerotier-one"),
])
def test_device_and_version_errors_say_what_to_fix(world, monkeypatch, status, words):
    original = Join.network_object

    def broken(join):
        obj = original(join)
        obj.update(status=status, portError=-1 if status == "PORT_ERROR" else 0)
        return obj

    monkeypatch.setattr(Join, "network_object", broken)
    result = run_module("zerotier_network", network_args(world.node), expect_fail=True)
    assert status in result["msg"] and words in result["msg"]


def test_wrong_token_names_the_option_and_prints_no_empty_body(world):
    """Issue 16, item 5. [AUTH-2] a wrong token is answered 401 with body `{}`: the message says what to
    fix and shows no stray body."""
    result = run_module("zerotier_network", network_args(world.node, api_token="not-the-token"), expect_fail=True)
    assert result["msg"] == ("zerotier-one service API rejected the credentials (HTTP 401) on GET /status. "
                             "Check the api_token option.")
    assert world.node.node.joins == {}


def test_token_file_is_read_when_no_token_given(world, tmp_path):
    token_file = tmp_path / "authtoken.secret"
    token_file.write_text(world.node.token + "\n")
    authorize(world)
    args = network_args(world.node, api_token_file=str(token_file))
    del args["api_token"]
    assert run_module("zerotier_network", args)["status"] == "OK"

    token_file.write_text("stale")
    failed = run_module("zerotier_network", args, expect_fail=True)
    assert "api_token_file (%s)" % token_file in failed["msg"]


@pytest.mark.parametrize("bad", ["8056c2e21c00001", "8056c2e21c0000011", "8056c2e21c00000g", ""])
def test_malformed_network_id_fails_before_any_request(world, bad):
    result = run_module("zerotier_network", network_args(world.node, network_id=bad), expect_fail=True)
    assert result["msg"].startswith("network_id must be a ZeroTier network id: exactly 16 hexadecimal")
    assert world.node.requests == []


def test_rate_limit_is_retried_after_retry_after(world):
    authorize(world)
    world.node.rate_limit("/status", count=1, retry_after="1")
    result = run_module("zerotier_network", network_args(world.node))
    assert result["status"] == "OK"
    assert [r["path"] for r in world.node.requests[:2]] == ["/status", "/status"]


def test_rate_limit_beyond_the_bound_fails_with_the_api_message(world):
    world.node.rate_limit("/status", count=5, retry_after="3600", message="Too many requests for this token")
    result = run_module("zerotier_network", network_args(world.node, rate_limit_wait=5), expect_fail=True)
    assert "HTTP 429" in result["msg"] and "Too many requests for this token" in result["msg"]
    assert "rate_limit_wait=5" in result["msg"]
    assert len(world.node.requests) == 1


def test_a_deauthorized_controller_member_is_not_reported_fine(make_world):
    """Issue 16, item 2. [TIME-3] a de-authorized node keeps reporting OK with its address until its next
    config refresh. On the controller's own node the module asks the controller and says so."""
    world = make_world(deauthorize_delay=60.0)
    controller = world.controller
    run_module("zerotier_member", member_args(controller, node_id=NWID[:10], authorized=True))
    assert run_module("zerotier_network", network_args(controller))["status"] == "OK"
    run_module("zerotier_member", member_args(controller, node_id=NWID[:10], authorized=False))
    assert query(world, controller)["status"] == "OK"  # what zerotier-one itself still reports

    result = run_module("zerotier_network", network_args(controller, settle=0.5), expect_fail=True)
    assert result["zerotier_status"] == "ACCESS_DENIED"
    assert "is not authorized on its controller" in result["msg"]
    assert "until its next config refresh" in result["msg"]


def test_a_remote_cleartext_api_url_is_warned_about(world):
    result = run_module("zerotier_network", dict(network_id=NWID, api_url="http://192.0.2.1:9", api_token="x",
                                                 timeout=1), expect_fail=True)
    assert any("in clear" in warning for warning in warnings(result))


def test_unreachable_api_is_a_clear_error(world):
    url = world.node.url
    world.node.stop()
    result = run_module("zerotier_network", dict(network_id=NWID, api_url=url, api_token="x"), expect_fail=True)
    assert result["msg"].startswith("cannot reach the zerotier-one service API at %s" % url)


# -- zerotier_member ----------------------------------------------------------------------------

def test_controller_member_authorize_posts_a_flat_body_once(world):
    """[CTL-6] a member never seen is absent; [CTL-8] POST creates it with a flat body."""
    args = member_args(world.controller, authorized=True, name="egress-1", ip_assignments=["10.147.17.5"])
    check = run_module("zerotier_member", args, check=True, diff=True)
    assert check["changed"] is True and check["existed"] is False
    assert check["diff"]["after"] == {"authorized": True, "name": "egress-1", "ip_assignments": ["10.147.17.5"]}
    assert world.controller.mutating_requests() == []

    result = run_module("zerotier_member", args, diff=True)
    assert result["changed"] is True
    assert result["member"] == {"authorized": True, "name": "egress-1", "ip_assignments": ["10.147.17.5"]}
    (post,) = world.controller.mutating_requests()
    assert post["path"] == member_path()
    assert post["body"] == {"authorized": True, "name": "egress-1", "ipAssignments": ["10.147.17.5"]}
    assert post["headers"].get("x-zt1-auth") == world.controller.token
    assert world.controller.controller.members[(NWID, NODE)]["authorized"] is True

    world.controller.requests.clear()
    again = run_module("zerotier_member", args)
    assert again["changed"] is False and world.controller.mutating_requests() == []


def test_authorizing_the_record_the_controller_made_changes_only_authorized(world):
    """[REC-1] the node's request makes an unauthorized record without a name; authorizing finds it."""
    run_module("zerotier_network", network_args(world.node, wait=False))
    wait_for_status(world, "ACCESS_DENIED")
    result = authorize(world)
    assert result["existed"] is True and result["changed"] is True
    assert [r["body"] for r in world.controller.mutating_requests()] == [{"authorized": True}]


def test_controller_member_posts_only_what_differs(world):
    run_module("zerotier_member", member_args(world.controller, authorized=True, name="egress-1",
                                              ip_assignments=["10.147.17.5"]))
    world.controller.requests.clear()
    result = run_module("zerotier_member", member_args(world.controller, authorized=True, name="egress-2",
                                                       ip_assignments=["10.147.17.5"]), diff=True)
    assert result["changed"] is True
    assert result["diff"]["before"]["name"] == "egress-1" and result["diff"]["after"]["name"] == "egress-2"
    assert [r["body"] for r in world.controller.mutating_requests()] == [{"name": "egress-2"}]


def test_ipv6_form_and_order_do_not_cause_changes(world):
    """[REC-4] the controller stores IPv6 compressed: a full form given to the module is no change."""
    ips = ["fd00:feed:0000:0000:0000:0000:0000:0005", "10.147.17.6"]
    run_module("zerotier_member", member_args(world.controller, ip_assignments=ips))
    assert sorted(world.controller.controller.members[(NWID, NODE)]["ipAssignments"]) == ["10.147.17.6", "fd00:feed::5"]
    world.controller.requests.clear()
    again = run_module("zerotier_member", member_args(world.controller, ip_assignments=list(reversed(ips))))
    assert again["changed"] is False and world.controller.mutating_requests() == []


def test_a_revision_the_controller_moved_is_no_change(world):
    """[REC-3] the revision moves without an API write; the module compares the managed fields only."""
    args = member_args(world.controller, authorized=True, name="egress-1")
    first = run_module("zerotier_member", args)
    run_module("zerotier_network", network_args(world.node))
    assert world.controller.controller.members[(NWID, NODE)]["revision"] > first["api_response"]["revision"]
    world.controller.requests.clear()
    assert run_module("zerotier_member", args)["changed"] is False
    assert world.controller.mutating_requests() == []


def test_central_member_authorize_nests_config_and_uses_token_header(world):
    central = world.central(CENTRAL_NWID[:10])
    central.add_network(CENTRAL_NWID, "10.147.18.0/24", private=True)
    args = member_args(central, authorized=True, name="egress-1", ip_assignments=["10.147.18.5"])
    result = run_module("zerotier_member", args, diff=True)
    assert result["changed"] is True
    (post,) = central.mutating_requests()
    assert post["path"] == "/api/v1/network/%s/member/%s" % (CENTRAL_NWID, NODE)
    assert post["headers"].get("authorization") == "token %s" % central.token
    assert "x-zt1-auth" not in post["headers"]
    assert post["body"] == {"name": "egress-1", "config": {"authorized": True, "ipAssignments": ["10.147.18.5"]}}
    assert result["api_response"]["config"]["authorized"] is True

    central.requests.clear()
    assert run_module("zerotier_member", args)["changed"] is False
    assert central.mutating_requests() == []

    # The authorization is what the joining node sees.
    joined = run_module("zerotier_network", network_args(world.node, network_id=CENTRAL_NWID))
    assert joined["addresses"] == ["10.147.18.5"]


def test_central_wrong_token_names_the_option(world):
    central = world.central(CENTRAL_NWID[:10])
    central.add_network(CENTRAL_NWID)
    args = member_args(central, authorized=True)
    args["api_token"] = "wrong"
    result = run_module("zerotier_member", args, expect_fail=True)
    assert "ZeroTier Central API rejected the credentials (HTTP 403)" in result["msg"]
    assert "Invalid API token" in result["msg"] and "api_token option" in result["msg"]


def test_central_rate_limit_then_success(world):
    central = world.central(CENTRAL_NWID[:10])
    central.add_network(CENTRAL_NWID)
    path = "/api/v1/network/%s/member/%s" % (CENTRAL_NWID, NODE)
    central.rate_limit(path, count=1, retry_after="1")
    result = run_module("zerotier_member", member_args(central, authorized=True))
    assert result["changed"] is True
    assert [r["method"] for r in central.requests if r["path"] == path] == ["GET", "GET", "POST"]


def test_member_absent_deletes_once(world):
    """[CTL-10] DELETE answers the deleted member; a member that is gone is left alone."""
    authorize(world)
    check = run_module("zerotier_member", member_args(world.controller, state="absent"), check=True)
    assert check["changed"] is True and (NWID, NODE) in world.controller.controller.members
    removed = run_module("zerotier_member", member_args(world.controller, state="absent"))
    assert removed["changed"] is True and (NWID, NODE) not in world.controller.controller.members
    world.controller.requests.clear()
    assert run_module("zerotier_member", member_args(world.controller, state="absent"))["changed"] is False
    assert world.controller.mutating_requests() == []


def test_absent_on_a_joined_node_is_idempotent_in_what_it_reports(world):
    """Issue 16, item 3. [REC-2] the controller re-creates a member deleted while its node is joined
    (unauthorized, no name): a second state=absent reports no change and posts nothing, and says why."""
    authorize(world, name="egress-1")
    run_module("zerotier_network", network_args(world.node))
    first = run_module("zerotier_member", member_args(world.controller, state="absent"))
    assert first["changed"] is True and first["controller_record"] is False
    deadline = time.monotonic() + 10
    while (NWID, NODE) not in world.controller.controller.members:
        query(world)  # the joined node keeps asking its controller
        assert time.monotonic() < deadline
        time.sleep(0.1)

    world.controller.requests.clear()
    for check in (True, False):
        again = run_module("zerotier_member", member_args(world.controller, state="absent"), check=check)
        assert again["changed"] is False and again["controller_record"] is True
        assert any("still joined" in warning for warning in warnings(again))
    assert world.controller.mutating_requests() == []


def test_member_on_an_unknown_network_says_so_and_check_mode_predicts_the_failure(world):
    """Issue 16, item 5. [CTL-7] [CTL-9] the controller answers 404 with an empty body for a member of a
    network it does not know: the module says the network does not exist there, in check mode too."""
    args = member_args(world.controller, network_id=UNKNOWN_NWID, authorized=True)
    for check in (True, False):
        result = run_module("zerotier_member", args, check=check, expect_fail=True)
        assert "network %s does not exist on the ZeroTier controller API at %s" % (
            UNKNOWN_NWID, world.controller.url) in result["msg"]
        assert "check network_id" in result["msg"]
        assert "empty body" not in result["msg"]
    assert world.controller.mutating_requests() == []

    other = run_module("zerotier_member", member_args(world.controller, network_id=NO_CONTROLLER_NWID,
                                                      state="absent"), expect_fail=True)
    assert "names controller %s, this controller is %s" % (NO_CONTROLLER_NWID[:10], NWID[:10]) in other["msg"]


def test_central_unknown_network_says_so(world):
    central = world.central(CENTRAL_NWID[:10])
    result = run_module("zerotier_member", member_args(central, authorized=True), expect_fail=True)
    assert "network %s does not exist on the ZeroTier Central API" % CENTRAL_NWID in result["msg"]


def test_member_token_file_is_read_on_the_target(world, tmp_path):
    token_file = tmp_path / "authtoken.secret"
    token_file.write_text(world.controller.token + "\n")
    args = member_args(world.controller, authorized=True, api_token_file=str(token_file))
    del args["api_token"]
    assert run_module("zerotier_member", args)["changed"] is True
    assert world.controller.mutating_requests()[0]["headers"]["x-zt1-auth"] == world.controller.token
    both = run_module("zerotier_member", dict(args, api_token="given-too"), expect_fail=True)
    assert "mutually exclusive" in both["msg"]
    del args["api_token_file"]
    neither = run_module("zerotier_member", args, expect_fail=True)
    assert "one of the following is required: api_token, api_token_file" in neither["msg"]


def test_member_remote_cleartext_controller_is_warned_about(world):
    result = run_module("zerotier_member", dict(member_args(world.controller, authorized=True),
                                                api_url="http://192.0.2.1:9", timeout=1), expect_fail=True)
    assert any("in clear" in warning and "delegate" in warning for warning in warnings(result))


@pytest.mark.parametrize("field, value, words", [
    ("node_id", "0deadbeef", "node_id must be a ZeroTier node address: exactly 10 hexadecimal"),
    ("node_id", "0deadbeefz", "node_id must be a ZeroTier node address"),
    ("network_id", "8056c2e21c00", "network_id must be a ZeroTier network id: exactly 16 hexadecimal"),
    ("ip_assignments", ["10.147.17.300"], "ip_assignments: '10.147.17.300' is not an IP address"),
    ("ip_assignments", ["10.147.17.5/24"], "ip_assignments: '10.147.17.5/24' is not an IP address"),
])
def test_member_bad_input_fails_before_any_request(world, field, value, words):
    result = run_module("zerotier_member", member_args(world.controller, authorized=True, **{field: value}),
                        expect_fail=True)
    assert words in result["msg"]
    assert world.controller.requests == []
