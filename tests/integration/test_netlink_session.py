"""module_utils/netlink's Session against a real kernel, in a throwaway network namespace: batches
larger than one round trip, an answer per request in order, dumps over many datagrams."""
import ctypes
import os
import socket

import pytest

from ansible_collections.liteboxd.sandbox_network.plugins.module_utils import netlink, routing
from tests.lib.netns import Netns, veth

CLONE_NEWNET = 0x40000000


@pytest.fixture
def session():
    """A Session opened inside a fresh namespace with ``v0`` (10.200.0.1/16); the test process
    returns to its own namespace before the test body runs."""
    with Netns() as ns, Netns() as peer:
        veth(ns, "v0", peer, "v0")
        ns.ip("addr add 10.200.0.1/16 dev v0")
        libc = ctypes.CDLL(None, use_errno=True)
        own = os.open("/proc/self/ns/net", os.O_RDONLY)
        target = os.open("/run/netns/%s" % ns.name, os.O_RDONLY)
        try:
            assert libc.setns(target, CLONE_NEWNET) == 0
            kernel = netlink.Session()  # the socket stays in the namespace it was made in
        finally:
            assert libc.setns(own, CLONE_NEWNET) == 0
            os.close(own)
            os.close(target)
        with kernel:
            yield kernel, ns


def route(index, via="10.200.0.2"):
    return routing.Route("ipv4", 1000 + index % 7, "172.16.%d.%d/32" % (index // 256, index % 256), 10, "unicast",
                         via, "v0", None, "global", False, routing.PROTO_STATIC)


def test_a_batch_larger_than_a_round_trip_answers_every_request_in_order(session):
    kernel, ns = session
    ifindex = kernel.ifindex()
    wanted = [route(i) for i in range(300)]
    wanted[150] = route(150, via="192.0.2.1")  # not on any link: the kernel refuses this one alone
    errors = kernel.change([routing.route_request(r, "add", ifindex) for r in wanted])
    assert len(errors) == 300 and netlink.BATCH < 300
    assert [i for i, error in enumerate(errors) if error is not None] == [150]
    assert errors[150].code == 101 and "ENETUNREACH" in str(errors[150])
    installed = ns.ip("-4 route show table all").count("via 10.200.0.2")
    assert installed == 299

    ifnames = kernel.ifnames()
    dumped = [routing.route_from_msg(m, ifnames) for m in kernel.dump("route", socket.AF_INET)]
    assert sorted(r for r in dumped if r.table >= 1000) == sorted(r for i, r in enumerate(wanted) if i != 150)
    again = kernel.change([routing.route_request(wanted[0], "add", ifindex),
                           routing.route_request(wanted[0], "delete", ifindex),
                           routing.route_request(wanted[0], "delete", ifindex)])
    assert [error.code if error else None for error in again] == [17, None, 3]  # EEXIST, done, ESRCH
