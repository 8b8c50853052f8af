"""The rtnetlink codec of module_utils/netlink, checked against pyroute2's (an independent encoder and
decoder of the same ABI): what pyroute2 encodes we decode, what we encode pyroute2 decodes."""
import socket
import struct

import pytest
from pyroute2.netlink.rtnl.fibmsg import fibmsg
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.ndmsg import ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from ansible_collections.liteboxd.sandbox_network.plugins.module_utils import netlink, routing


def pyroute2_bytes(msg_class, msg_type, fields, attrs):
    msg = msg_class()
    msg["header"]["type"] = msg_type
    msg["header"]["sequence_number"] = 9
    for key, value in fields.items():
        msg[key] = value
    msg["attrs"] = attrs
    msg.encode()
    return bytes(msg.data)


def decoded(data):
    [(header, message, _payload)] = netlink.decode(data)
    return header, message


def test_route_message_from_pyroute2():
    data = pyroute2_bytes(rtmsg, 24, dict(family=socket.AF_INET, dst_len=16, table=252, proto=4, scope=0, type=1,
                                          flags=routing.RTNH_F_ONLINK),
                          [("RTA_TABLE", 100000), ("RTA_DST", "10.42.0.0"), ("RTA_GATEWAY", "10.147.17.1"),
                           ("RTA_OIF", 3), ("RTA_PRIORITY", 7), ("RTA_PREFSRC", "10.147.17.5")])
    header, message = decoded(data)
    assert header == (24, 0, 9)
    assert routing.route_from_msg(message, {3: "zt0"}) == routing.Route(
        "ipv4", 100000, "10.42.0.0/16", 7, "unicast", "10.147.17.1", "zt0", "10.147.17.5", "global", True, 4)


def test_multipath_and_ipv6_routes_from_pyroute2():
    data = pyroute2_bytes(rtmsg, 24, dict(family=socket.AF_INET6, dst_len=32, table=254, proto=3, type=1),
                          [("RTA_DST", "2001:db8::"), ("RTA_MULTIPATH", [
                              {"oif": 3, "attrs": [("RTA_GATEWAY", "fd00::1")]},
                              {"oif": 4, "attrs": [("RTA_GATEWAY", "fd00::2")]}])])
    route = routing.route_from_msg(decoded(data)[1], {3: "zt0", 4: "zt1"})
    assert (route.family, route.dst, route.via) == ("ipv6", "2001:db8::/32", "multipath:fd00::1@zt0,fd00::2@zt1")


def test_rule_message_from_pyroute2():
    data = pyroute2_bytes(fibmsg, 32, dict(family=socket.AF_INET, src_len=16, table=100, action=1),
                          [("FRA_PRIORITY", 100), ("FRA_TABLE", 100), ("FRA_SRC", "10.99.0.0"),
                           ("FRA_IIFNAME", "cube-router"), ("FRA_FWMARK", 0x10), ("FRA_FWMASK", 0xff),
                           ("FRA_OIFNAME", "zt0")])
    assert routing.rule_from_msg(decoded(data)[1]) == routing.Rule(
        "ipv4", 100, "10.99.0.0/16", None, "cube-router", "zt0", 0x10, 0xff, False, "lookup", 100)


def test_link_address_and_neighbour_messages_from_pyroute2():
    vxlan = pyroute2_bytes(ifinfmsg, 16, dict(index=7, flags=1), [
        ("IFLA_IFNAME", "natvx"), ("IFLA_MTU", 1450), ("IFLA_ADDRESS", "02:00:00:00:00:07"),
        ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "vxlan"), ("IFLA_INFO_DATA", {"attrs": [
            ("IFLA_VXLAN_ID", 100), ("IFLA_VXLAN_LOCAL", "203.0.113.10"), ("IFLA_VXLAN_GROUP", "198.51.100.20"),
            ("IFLA_VXLAN_PORT", 4789), ("IFLA_VXLAN_LINK", 2)]})]})])
    link = decoded(vxlan)[1]
    assert (link["index"], link["flags"]) == (7, 1)
    assert link["attrs"] == {"IFLA_IFNAME": "natvx", "IFLA_MTU": 1450, "IFLA_ADDRESS": "02:00:00:00:00:07",
                             "IFLA_LINKINFO": {"IFLA_INFO_KIND": "vxlan", "IFLA_INFO_DATA": {
                                 "IFLA_VXLAN_ID": 100, "IFLA_VXLAN_LOCAL": "203.0.113.10",
                                 "IFLA_VXLAN_GROUP": "198.51.100.20", "IFLA_VXLAN_PORT": 4789,
                                 "IFLA_VXLAN_LINK": 2}}}
    address = decoded(pyroute2_bytes(ifaddrmsg, 20, dict(family=socket.AF_INET, prefixlen=30, index=7), [
        ("IFA_ADDRESS", "169.254.100.1"), ("IFA_LOCAL", "169.254.100.1")]))[1]
    assert (address["prefixlen"], address["index"], address["attrs"]["IFA_LOCAL"]) == (30, 7, "169.254.100.1")
    neighbour = decoded(pyroute2_bytes(ndmsg, 28, dict(family=socket.AF_INET, ifindex=7, state=0x80), [
        ("NDA_DST", "192.168.63.254"), ("NDA_LLADDR", "02:00:00:00:00:07")]))[1]
    assert (neighbour["ifindex"], neighbour["state"]) == (7, 0x80)
    assert neighbour["attrs"] == {"NDA_DST": "192.168.63.254", "NDA_LLADDR": "02:00:00:00:00:07"}


def pyroute2_decode(msg_class, data):
    msg = msg_class(data)
    msg.decode()
    return msg


@pytest.mark.parametrize("op, msg_type, flags", [("add", 24, 0x605), ("replace", 24, 0x505), ("delete", 25, 0x5)])
def test_route_requests_decode_in_pyroute2(op, msg_type, flags):
    wanted = routing.Route("ipv4", 100000, "10.42.0.0/16", 7, "unicast", "10.147.17.1", "zt0", None, "global", True, 4)
    data = netlink.encode(*routing.route_request(wanted, op, {"zt0": 3}), seq=42)
    msg = pyroute2_decode(rtmsg, data)
    assert (msg["header"]["type"], msg["header"]["flags"], msg["header"]["sequence_number"]) == (msg_type, flags, 42)
    assert (msg["dst_len"], msg["table"], msg.get_attr("RTA_TABLE"), msg.get_attr("RTA_DST"),
            msg.get_attr("RTA_PRIORITY")) == (16, 252, 100000, "10.42.0.0", 7)
    if op != "delete":
        assert (msg.get_attr("RTA_GATEWAY"), msg.get_attr("RTA_OIF"), msg["flags"], msg["proto"]) == (
            "10.147.17.1", 3, routing.RTNH_F_ONLINK, 4)


def test_rule_requests_decode_in_pyroute2():
    wanted = routing.Rule("ipv6", 200, "fd00::/64", None, "uplink", None, 0x10, 0xff, True, "lookup", 106)
    msg = pyroute2_decode(fibmsg, netlink.encode(*routing.rule_request(wanted, "add"), seq=1))
    assert (msg["family"], msg["src_len"], msg["action"], msg["flags"], msg["table"]) == (
        socket.AF_INET6, 64, 1, routing.FIB_RULE_INVERT, 106)
    assert [msg.get_attr(name) for name in ("FRA_PRIORITY", "FRA_TABLE", "FRA_SRC", "FRA_IIFNAME", "FRA_FWMARK",
                                            "FRA_FWMASK")] == [200, 106, "fd00::", "uplink", 0x10, 0xff]


def error_message(code, seq, request_len, detail=None, capped=True):
    """An NLMSG_ERROR as the kernel sends it: errno, the request's header (and its payload unless the
    socket asked for capped acks), then the extended-ack explanation."""
    payload = struct.pack("=i", -code) + struct.pack("=IHHII", request_len, 24, 5, seq, 0)
    if not capped:
        payload += b"\xee" * (request_len - 16)
    flags = netlink.NLM_F_CAPPED if capped else 0
    if detail:
        text = detail.encode() + b"\0"
        payload += struct.pack("=HH", 4 + len(text), netlink.NLMSGERR_ATTR_MSG) + text + b"\0" * (-len(text) % 4)
        flags |= netlink.NLM_F_ACK_TLVS
    return struct.pack("=IHHII", 16 + len(payload), netlink.NLMSG_ERROR, flags, seq, 0) + payload


@pytest.mark.parametrize("capped", [True, False])
def test_errors_carry_the_kernels_explanation(capped):
    [(header, message, payload)] = netlink.decode(error_message(101, 5, 60, "Nexthop has invalid gateway", capped))
    assert header == (netlink.NLMSG_ERROR, header[1], 5) and message is None
    code, detail = netlink._error(payload, header[1])
    assert str(netlink.KernelError(code, detail)) == \
        "Network is unreachable (ENETUNREACH): Nexthop has invalid gateway"
    ack = netlink.decode(error_message(0, 6, 60))[0]
    assert netlink._error(ack[2], ack[0][1]) == (0, None)
