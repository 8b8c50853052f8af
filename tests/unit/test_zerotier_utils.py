"""Pure logic of plugins/module_utils/zerotier.py: validation, request bodies, error texts."""
import email.utils
import time

import pytest

from ansible_collections.liteboxd.sandbox_network.plugins.module_utils.zerotier import (
    CentralMembers,
    ControllerMembers,
    ZeroTierError,
    _api_message,
    _retry_after_seconds,
    canonical_ip_assignments,
    cleartext_remote,
    member_client,
    read_token_file,
    validate_network_id,
    validate_node_id,
)


@pytest.mark.parametrize("value", ["8056c2e21c000001", "8056C2E21C000001"])
def test_network_id_accepts_16_hex_and_lowercases(value):
    assert validate_network_id(value) == "8056c2e21c000001"


@pytest.mark.parametrize("value, length", [("8056c2e21c00001", 15), ("8056c2e21c0000011", 17),
                                           ("8056c2e21c00000x", 16), (" 8056c2e21c000001", 17)])
def test_network_id_rejects_other_shapes_naming_the_option(value, length):
    with pytest.raises(ZeroTierError) as err:
        validate_network_id(value, "zerotier_network_id")
    assert str(err.value).startswith("zerotier_network_id must be a ZeroTier network id: exactly 16 hexadecimal")
    assert "(%d characters)" % length in str(err.value)


def test_node_id_is_10_hex():
    assert validate_node_id("0DEADBEEF1") == "0deadbeef1"
    for bad in ("0deadbeef", "0deadbeef12", "0deadbeefg"):
        with pytest.raises(ZeroTierError, match="node_id must be a ZeroTier node address"):
            validate_node_id(bad)


def test_ip_assignments_are_canonical_sorted_and_deduplicated():
    assert canonical_ip_assignments(["fd00:feed:0000:0000:0000:0000:0000:0005", "10.147.17.9", "10.147.17.10",
                                     "10.147.17.9"]) == ["10.147.17.9", "10.147.17.10", "fd00:feed::5"]


@pytest.mark.parametrize("bad", ["10.147.17.256", "10.147.17.0/24", "egress", ""])
def test_ip_assignments_reject_non_addresses_naming_the_option(bad):
    with pytest.raises(ZeroTierError, match=r"^ip_assignments: .* is not an IP address"):
        canonical_ip_assignments([bad], "ip_assignments")


def test_controller_body_is_flat_and_central_body_nests_config():
    changes = {"authorized": True, "name": "egress-1", "ip_assignments": ["10.147.17.5"]}
    assert ControllerMembers.body(changes) == {"authorized": True, "name": "egress-1",
                                               "ipAssignments": ["10.147.17.5"]}
    assert CentralMembers.body(changes) == {"name": "egress-1",
                                            "config": {"authorized": True, "ipAssignments": ["10.147.17.5"]}}
    assert CentralMembers.body({"name": "x"}) == {"name": "x"}
    assert CentralMembers.body({"authorized": False}) == {"config": {"authorized": False}}


def test_member_settings_read_both_shapes_the_same():
    flat = {"id": "0deadbeef1", "authorized": True, "name": "n", "ipAssignments": ["10.0.0.2", "10.0.0.1"]}
    nested = {"nodeId": "0deadbeef1", "name": "n",
              "config": {"authorized": True, "ipAssignments": ["10.0.0.1", "10.0.0.2"]}}
    expected = {"authorized": True, "name": "n", "ip_assignments": ["10.0.0.1", "10.0.0.2"]}
    assert ControllerMembers.settings(flat) == expected
    assert CentralMembers.settings(nested) == expected
    assert CentralMembers.settings({}) == {"authorized": False, "name": "", "ip_assignments": []}


def test_clients_send_their_own_auth_header():
    assert member_client("controller", "t1").headers == {"X-ZT1-Auth": "t1"}
    central = member_client("central", "t2")
    assert central.headers == {"Authorization": "token t2"}
    assert central.base_url == "https://api.zerotier.com/api/v1"


@pytest.mark.parametrize("body, message", [
    (b'{"type": "rate_limit", "message": "slow down"}', "slow down"),
    (b'{"error": "401 Unauthorized"}', "401 Unauthorized"),
    (b'{"error": {"message": "nested"}}', "nested"),
    (b"plain text failure", "plain text failure"),
    (b"", None),      # zerotier-one's 404 when no route matches, and the controller's 404s
    (b"{}", None),    # zerotier-one's 401
    (b"  \n", None),
])
def test_api_message_takes_the_api_text_and_nothing_from_an_empty_body(body, message):
    """[AUTH-2] [CTL-6] bodies that say nothing give no message text."""
    assert _api_message(body) == message


@pytest.mark.parametrize("url, clear", [
    ("http://127.0.0.1:9993", False),
    ("http://localhost:9993", False),
    ("http://[::1]:9993", False),
    ("https://zt-controller.example.internal", False),
    ("http://10.20.0.5:9993", True),
    ("http://zt-controller.example.internal:9993", True),
])
def test_cleartext_remote_is_plain_http_off_this_host(url, clear):
    """[AUTH-3] the token travels in a header: plain HTTP to another host carries it in clear."""
    assert cleartext_remote(url) is clear


def test_retry_after_reads_seconds_and_dates():
    assert _retry_after_seconds("7") == 7
    assert _retry_after_seconds(None) is None
    assert _retry_after_seconds("soon") is None
    assert _retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0  # a date in the past: retry now
    later = email.utils.formatdate(time.time() + 3600, usegmt=True)
    assert 3000 < _retry_after_seconds(later) <= 3600


def test_token_file_errors_name_the_option(tmp_path):
    with pytest.raises(ZeroTierError, match=r"\(api_token_file\)"):
        read_token_file(str(tmp_path / "missing"))
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ZeroTierError, match="is empty"):
        read_token_file(str(empty))
