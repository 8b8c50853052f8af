"""zerotier_network and zerotier_member, run as Ansible runs them, against the ZeroTier API stub.

zerotier-one cannot be installed here; tests/lib/zerotier_stub.py serves the published shapes of
the service, controller and Central APIs with state and status transitions, and records every
request so the tests can check what was (not) sent.
"""
import pytest

from tests.lib.modules import run_module
from tests.lib.zerotier_stub import ZeroTierStub

NWID = "8056c2e21c000001"
UNKNOWN_NWID = "8056c2e21c0000ff"
NODE = "0deadbeef1"


@pytest.fixture
def stub():
    server = ZeroTierStub(node_address=NODE, config_polls=2).start()
    server.add_network(NWID, "10.147.17.0/24", private=True)
    yield server
    server.stop()


def network_args(stub, **extra):
    args = dict(network_id=NWID, api_url=stub.url, api_token=stub.token, poll_interval=0.05, wait_timeout=30)
    args.update(extra)
    return args


def member_args(stub, api="controller", **extra):
    if api == "controller":
        args = dict(api="controller", api_url=stub.url, api_token=stub.token)
    else:
        args = dict(api="central", api_url=stub.central_url, api_token=stub.central_token)
    args.update(network_id=NWID, node_id=NODE)
    args.update(extra)
    return args


def authorize(stub, **extra):
    return run_module("zerotier_member", member_args(stub, authorized=True, **extra))


def test_join_waits_for_ok_with_address_then_is_idempotent(stub):
    authorize(stub)
    result = run_module("zerotier_network", network_args(stub))
    assert result["changed"] is True
    assert result["status"] == "OK"
    assert result["node_id"] == NODE
    assert result["port_device_name"] == "zt" + NWID[-8:]
    assert result["assigned_addresses"] == ["10.147.17.10/24"]
    assert result["addresses"] == ["10.147.17.10"]
    polls = [r for r in stub.requests if r["method"] == "GET" and r["path"] == "/network/" + NWID]
    assert len(polls) > stub.config_polls  # it waited through REQUESTING_CONFIGURATION

    stub.requests.clear()
    again = run_module("zerotier_network", network_args(stub))
    assert again["changed"] is False
    assert again["assigned_addresses"] == ["10.147.17.10/24"]
    assert stub.mutating_requests() == []


def test_every_request_carries_the_service_token(stub):
    authorize(stub)
    run_module("zerotier_network", network_args(stub))
    service = [r for r in stub.requests if not r["path"].startswith("/controller/")]
    assert service and all(r["headers"].get("x-zt1-auth") == stub.token for r in service)


def test_check_mode_predicts_join_without_mutating_and_diff_shows_it(stub):
    result = run_module("zerotier_network", network_args(stub, allow_default=False), check=True, diff=True)
    assert result["changed"] is True
    assert result["joined"] is True
    assert result["diff"] == {"before": {"joined": False, "allowDefault": None},
                              "after": {"joined": True, "allowDefault": False}}
    assert stub.mutating_requests() == []
    assert stub.joined == {}

    authorize(stub)
    real = run_module("zerotier_network", network_args(stub, allow_default=False), diff=True)
    assert real["changed"] is True and real["diff"] == result["diff"]

    stub.requests.clear()
    converged = run_module("zerotier_network", network_args(stub, allow_default=False), check=True, diff=True)
    assert converged["changed"] is False
    assert converged["diff"]["before"] == converged["diff"]["after"]
    assert stub.mutating_requests() == []


def test_changed_local_setting_is_posted_alone(stub):
    authorize(stub)
    run_module("zerotier_network", network_args(stub))
    stub.requests.clear()
    result = run_module("zerotier_network", network_args(stub, allow_global=True), diff=True)
    assert result["changed"] is True
    assert result["diff"] == {"before": {"joined": True, "allowGlobal": False},
                              "after": {"joined": True, "allowGlobal": True}}
    posts = stub.mutating_requests()
    assert [(r["method"], r["body"]) for r in posts] == [("POST", {"allowGlobal": True})]
    assert result["network"]["allowGlobal"] is True


def test_leave_then_leave_again_changes_nothing(stub):
    authorize(stub)
    run_module("zerotier_network", network_args(stub))
    stub.requests.clear()
    check = run_module("zerotier_network", network_args(stub, state="absent"), check=True, diff=True)
    assert check["changed"] is True
    assert check["diff"] == {"before": {"joined": True}, "after": {"joined": False}}
    assert stub.mutating_requests() == [] and NWID in stub.joined

    left = run_module("zerotier_network", network_args(stub, state="absent"))
    assert left["changed"] is True and left["joined"] is False
    assert [(r["method"], r["path"]) for r in stub.mutating_requests()] == [("DELETE", "/network/" + NWID)]
    assert NWID not in stub.joined

    again = run_module("zerotier_network", network_args(stub, state="absent"))
    assert again["changed"] is False


def test_query_reports_without_joining(stub):
    result = run_module("zerotier_network", network_args(stub, state="query"))
    assert result["changed"] is False and result["joined"] is False and result["status"] == ""
    assert stub.mutating_requests() == []


def test_access_denied_fails_at_once_naming_node_and_network(stub):
    result = run_module("zerotier_network", network_args(stub), expect_fail=True)
    assert "authorize node %s on network %s" % (NODE, NWID) in result["msg"]
    assert result["zerotier_status"] == "ACCESS_DENIED"
    assert result["changed"] is True  # the join happened and stays


def test_access_denied_wait_times_out_with_the_authorize_message(stub):
    result = run_module("zerotier_network", network_args(stub, wait_for_authorization=True, wait_timeout=1,
                                                         poll_interval=0.2), expect_fail=True)
    assert result["msg"].startswith("timed out after 1s waiting for network %s" % NWID)
    assert "authorize node %s on network %s" % (NODE, NWID) in result["msg"]


def test_authorizing_while_waiting_lets_the_join_finish(stub):
    # First join without waiting, authorize, then wait: ACCESS_DENIED turns into OK.
    run_module("zerotier_network", network_args(stub, wait=False))
    statuses = [run_module("zerotier_network", network_args(stub, state="query"))["status"]
                for poll in range(stub.config_polls + 1)]
    assert statuses == ["REQUESTING_CONFIGURATION"] * stub.config_polls + ["ACCESS_DENIED"]
    authorize(stub, ip_assignments=["10.147.17.77"])
    result = run_module("zerotier_network", network_args(stub, wait_for_authorization=True))
    assert result["status"] == "OK" and result["addresses"] == ["10.147.17.77"]


def test_unknown_network_is_not_found(stub):
    result = run_module("zerotier_network", network_args(stub, network_id=UNKNOWN_NWID), expect_fail=True)
    assert "NOT_FOUND" in result["msg"] and UNKNOWN_NWID in result["msg"] and "network_id" in result["msg"]


@pytest.mark.parametrize("status, words", [
    ("PORT_ERROR", "/dev/net/tun"),
    ("CLIENT_TOO_OLD", "newer zerotier-one"),
])
def test_device_and_version_errors_say_what_to_fix(stub, monkeypatch, status, words):
    original = stub._network_object

    def broken(network_id):
        obj = original(network_id)
        obj.update(status=status, portError=-1 if status == "PORT_ERROR" else 0)
        return obj

    monkeypatch.setattr(stub, "_network_object", broken)
    result = run_module("zerotier_network", network_args(stub), expect_fail=True)
    assert status in result["msg"] and words in result["msg"]


def test_wrong_token_names_the_option(stub):
    result = run_module("zerotier_network", network_args(stub, api_token="not-the-token"), expect_fail=True)
    assert "HTTP 401" in result["msg"] and "api_token option" in result["msg"]
    assert "not-the-token" not in result["msg"]
    assert stub.joined == {}


def test_token_file_is_read_when_no_token_given(stub, tmp_path):
    token_file = tmp_path / "authtoken.secret"
    token_file.write_text(stub.token + "\n")
    authorize(stub)
    args = network_args(stub, api_token_file=str(token_file))
    del args["api_token"]
    assert run_module("zerotier_network", args)["status"] == "OK"

    token_file.write_text("stale")
    failed = run_module("zerotier_network", args, expect_fail=True)
    assert "api_token_file (%s)" % token_file in failed["msg"]


@pytest.mark.parametrize("bad", ["8056c2e21c00001", "8056c2e21c0000011", "8056c2e21c00000g", ""])
def test_malformed_network_id_fails_before_any_request(stub, bad):
    result = run_module("zerotier_network", network_args(stub, network_id=bad), expect_fail=True)
    assert result["msg"].startswith("network_id must be a ZeroTier network id: exactly 16 hexadecimal")
    assert stub.requests == []


def test_rate_limit_is_retried_after_retry_after(stub):
    authorize(stub)
    stub.requests.clear()
    stub.rate_limit("/status", count=1, retry_after="1")
    result = run_module("zerotier_network", network_args(stub))
    assert result["status"] == "OK"
    assert [r["path"] for r in stub.requests[:2]] == ["/status", "/status"]


def test_rate_limit_beyond_the_bound_fails_with_the_api_message(stub):
    stub.rate_limit("/status", count=5, retry_after="3600", message="Too many requests for this token")
    result = run_module("zerotier_network", network_args(stub, rate_limit_wait=5), expect_fail=True)
    assert "HTTP 429" in result["msg"] and "Too many requests for this token" in result["msg"]
    assert "rate_limit_wait=5" in result["msg"]
    assert len(stub.requests) == 1


# -- zerotier_member ---------------------------------------------------------------------------

def test_controller_member_authorize_posts_a_flat_body_once(stub):
    args = member_args(stub, authorized=True, name="egress-1", ip_assignments=["10.147.17.5"])
    check = run_module("zerotier_member", args, check=True, diff=True)
    assert check["changed"] is True and check["existed"] is False
    assert check["diff"]["after"] == {"authorized": True, "name": "egress-1", "ip_assignments": ["10.147.17.5"]}
    assert stub.mutating_requests() == []

    result = run_module("zerotier_member", args, diff=True)
    assert result["changed"] is True
    assert result["member"] == {"authorized": True, "name": "egress-1", "ip_assignments": ["10.147.17.5"]}
    (post,) = stub.mutating_requests()
    assert post["path"] == "/controller/network/%s/member/%s" % (NWID, NODE)
    assert post["body"] == {"authorized": True, "name": "egress-1", "ipAssignments": ["10.147.17.5"]}
    assert post["headers"].get("x-zt1-auth") == stub.token
    assert stub.members[(NWID, NODE)]["authorized"] is True

    stub.requests.clear()
    again = run_module("zerotier_member", args)
    assert again["changed"] is False and stub.mutating_requests() == []


def test_controller_member_posts_only_what_differs(stub):
    run_module("zerotier_member", member_args(stub, authorized=True, name="egress-1",
                                              ip_assignments=["10.147.17.5"]))
    stub.requests.clear()
    result = run_module("zerotier_member", member_args(stub, authorized=True, name="egress-2",
                                                       ip_assignments=["10.147.17.5"]), diff=True)
    assert result["changed"] is True
    assert result["diff"]["before"]["name"] == "egress-1" and result["diff"]["after"]["name"] == "egress-2"
    assert [r["body"] for r in stub.mutating_requests()] == [{"name": "egress-2"}]


def test_ipv6_and_order_do_not_cause_changes(stub):
    ips = ["fd00:feed::5", "10.147.17.6"]
    run_module("zerotier_member", member_args(stub, ip_assignments=ips))
    stub.members[(NWID, NODE)]["ipAssignments"] = ["fd00:feed:0000:0000:0000:0000:0000:0005", "10.147.17.6"]
    stub.requests.clear()
    again = run_module("zerotier_member", member_args(stub, ip_assignments=list(reversed(ips))))
    assert again["changed"] is False and stub.mutating_requests() == []


def test_central_member_authorize_nests_config_and_uses_token_header(stub):
    args = member_args(stub, api="central", authorized=True, name="egress-1", ip_assignments=["10.147.17.5"])
    result = run_module("zerotier_member", args, diff=True)
    assert result["changed"] is True
    (post,) = stub.mutating_requests()
    assert post["path"] == "/api/v1/network/%s/member/%s" % (NWID, NODE)
    assert post["headers"].get("authorization") == "token %s" % stub.central_token
    assert "x-zt1-auth" not in post["headers"]
    assert post["body"] == {"name": "egress-1", "config": {"authorized": True, "ipAssignments": ["10.147.17.5"]}}
    assert result["api_response"]["config"]["authorized"] is True
    assert stub.members[(NWID, NODE)]["authorized"] is True

    stub.requests.clear()
    assert run_module("zerotier_member", args)["changed"] is False
    assert stub.mutating_requests() == []

    # The authorization is what the joining node sees.
    joined = run_module("zerotier_network", network_args(stub))
    assert joined["addresses"] == ["10.147.17.5"]


def test_central_wrong_token_names_the_option(stub):
    args = member_args(stub, api="central", authorized=True)
    args["api_token"] = "wrong"
    result = run_module("zerotier_member", args, expect_fail=True)
    assert "ZeroTier Central API rejected the credentials (HTTP 403)" in result["msg"]
    assert "Invalid API token" in result["msg"] and "api_token option" in result["msg"]


def test_central_rate_limit_then_success(stub):
    path = "/api/v1/network/%s/member/%s" % (NWID, NODE)
    stub.rate_limit(path, count=1, retry_after="1")
    result = run_module("zerotier_member", member_args(stub, api="central", authorized=True))
    assert result["changed"] is True
    assert [r["method"] for r in stub.requests] == ["GET", "GET", "POST"]


def test_member_absent_deletes_once(stub):
    authorize(stub)
    check = run_module("zerotier_member", member_args(stub, state="absent"), check=True)
    assert check["changed"] is True and (NWID, NODE) in stub.members
    removed = run_module("zerotier_member", member_args(stub, state="absent"))
    assert removed["changed"] is True and (NWID, NODE) not in stub.members
    assert run_module("zerotier_member", member_args(stub, state="absent"))["changed"] is False


@pytest.mark.parametrize("field, value, words", [
    ("node_id", "0deadbeef", "node_id must be a ZeroTier node address: exactly 10 hexadecimal"),
    ("node_id", "0deadbeefz", "node_id must be a ZeroTier node address"),
    ("network_id", "8056c2e21c00", "network_id must be a ZeroTier network id: exactly 16 hexadecimal"),
    ("ip_assignments", ["10.147.17.300"], "ip_assignments: '10.147.17.300' is not an IP address"),
    ("ip_assignments", ["10.147.17.5/24"], "ip_assignments: '10.147.17.5/24' is not an IP address"),
])
def test_member_bad_input_fails_before_any_request(stub, field, value, words):
    result = run_module("zerotier_member", member_args(stub, authorized=True, **{field: value}), expect_fail=True)
    assert words in result["msg"]
    assert stub.requests == []


def test_unreachable_api_is_a_clear_error(stub):
    url = stub.url
    stub.stop()
    result = run_module("zerotier_network", dict(network_id=NWID, api_url=url, api_token="x"), expect_fail=True)
    assert result["msg"].startswith("cannot reach the zerotier-one service API at %s" % url)
