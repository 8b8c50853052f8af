"""CubeSandbox's cube-router address rules: every rule, every rejection, the rule named in the error."""
import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.liteboxd.sandbox_network.plugins.filter.cube_router_addresses import FilterModule
from ansible_collections.liteboxd.sandbox_network.plugins.module_utils.cube_router_addresses import (
    RULES,
    CubeRouterAddressError,
    _check_nat_ip,
    derive_addresses,
    netaddr,
)

HOST_ADDRESSES = [{"address": "10.206.0.15/24", "dev": "eth1"}, {"address": "127.0.0.1/8", "dev": "lo"}]
HOST_ROUTES = [{"dst": "default", "dev": "eth0"}, {"dst": "0.0.0.0/0", "dev": "eth0"},
               {"dst": "10.206.0.0/24", "dev": "eth1"}, {"dst": "172.20.0.0/16", "dev": "natvx"}]


def rejected(rule, *args, **kwargs):
    with pytest.raises(CubeRouterAddressError) as info:
        derive_addresses(*args, **kwargs)
    assert info.value.rule == rule
    assert rule in str(info.value) and RULES[rule] in str(info.value)
    return info.value


@pytest.mark.parametrize("sandbox_cidr, router, nat", [
    ("192.168.0.0/18", "192.168.63.253", "192.168.63.254"),  # CubeSandbox's default
    ("10.0.0.0/16", "10.0.255.253", "10.0.255.254"),
    ("172.16.5.0/24", "172.16.5.253", "172.16.5.254"),
    ("100.96.0.0/20", "100.96.15.253", "100.96.15.254"),  # no private rule for the sandbox CIDR
])
def test_addresses_from_the_sandbox_cidr_are_the_last_two_usable(sandbox_cidr, router, nat):
    result = derive_addresses(sandbox_cidr, interface_addresses=HOST_ADDRESSES, routes=HOST_ROUTES)
    assert result == {"router_ip": router, "router_cidr": router + "/32", "nat_ip": nat,
                      "source": "sandbox_cidr", "source_cidr": sandbox_cidr}
    network = netaddr.IPNetwork(sandbox_cidr)
    assert netaddr.IPAddress(nat) == network.broadcast - 1  # the last usable address


@pytest.mark.parametrize("sandbox_cidr", ["192.168.0.0/15", "10.0.0.0/8", "192.168.0.0/25", "192.168.0.0/30"])
def test_sandbox_cidr_mask_outside_16_to_24_is_rejected(sandbox_cidr):
    rejected("sandbox_cidr_prefix", sandbox_cidr)


@pytest.mark.parametrize("sandbox_cidr", ["fd00::/64", "192.168.0.1", "not-a-cidr", ""])
def test_sandbox_cidr_must_be_an_ipv4_cidr(sandbox_cidr):
    rejected("sandbox_cidr_ipv4", sandbox_cidr)


def test_sandbox_nat_ip_must_not_be_local():
    error = rejected("nat_ip_not_local", "192.168.0.0/18",
                     interface_addresses=[{"address": "192.168.63.254/18", "dev": "eth2"}])
    assert "eth2" in str(error)


@pytest.mark.parametrize("cidr, router, nat", [
    ("10.254.0.0/24", "10.254.0.1", "10.254.0.2"),  # the seed's example
    ("10.254.0.0/16", "10.254.0.1", "10.254.0.2"),
    ("172.31.255.252/30", "172.31.255.253", "172.31.255.254"),
    ("192.168.200.0/29", "192.168.200.1", "192.168.200.2"),
])
def test_custom_cidr_gives_network_plus_one_and_two(cidr, router, nat):
    result = derive_addresses("192.168.0.0/18", cidr=cidr, interface_addresses=HOST_ADDRESSES, routes=HOST_ROUTES)
    assert (result["router_cidr"], result["nat_ip"], result["source"]) == (router + "/32", nat, "cidr")


def test_custom_cidr_ignores_the_sandbox_cidr_rules():
    assert derive_addresses("192.168.0.0/8", cidr="10.254.0.0/24")["nat_ip"] == "10.254.0.2"


@pytest.mark.parametrize("cidr, rule", [
    ("10.254.0.1/24", "cidr_aligned"),  # misaligned
    ("10.254.0.128/24", "cidr_aligned"),
    ("8.8.8.0/24", "cidr_private"),  # public
    ("100.64.0.0/24", "cidr_private"),  # CGNAT is not RFC 1918
    ("172.32.0.0/24", "cidr_private"),
    ("10.0.0.0/15", "cidr_prefix"),  # /15
    ("10.254.0.0/31", "cidr_prefix"),  # /31
    ("10.254.0.0/32", "cidr_prefix"),
    ("fd00:254::/64", "cidr_ipv4"),  # IPv6
    ("10.254.0.1", "cidr_ipv4"),  # an address, not a CIDR
])
def test_custom_cidr_rejections_name_the_rule(cidr, rule):
    rejected(rule, "192.168.0.0/18", cidr=cidr, interface_addresses=HOST_ADDRESSES, routes=HOST_ROUTES)


def test_custom_cidr_overlapping_a_host_route_on_another_link_is_rejected():
    error = rejected("cidr_no_route_overlap", "192.168.0.0/18", cidr="172.20.8.0/24",
                     interface_addresses=HOST_ADDRESSES, routes=HOST_ROUTES)
    assert "natvx" in str(error)
    # A route larger than the CIDR overlaps as well.
    rejected("cidr_no_route_overlap", "192.168.0.0/18", cidr="172.20.0.0/16", routes=HOST_ROUTES)


def test_routes_on_the_device_itself_and_the_default_route_are_not_overlaps():
    routes = HOST_ROUTES + [{"dst": "10.254.0.2/32", "dev": "cube-router"}]
    addresses = HOST_ADDRESSES + [{"address": "10.254.0.1/32", "dev": "cube-router"}]
    assert derive_addresses("192.168.0.0/18", cidr="10.254.0.0/24", interface_addresses=addresses,
                            routes=routes)["router_ip"] == "10.254.0.1"


def test_custom_cidr_overlapping_an_interface_address_is_rejected():
    rejected("cidr_no_interface_overlap", "192.168.0.0/18", cidr="10.206.0.0/16",
             interface_addresses=HOST_ADDRESSES, routes=[])


def test_custom_nat_ip_must_not_be_local():
    addresses = HOST_ADDRESSES + [{"address": "10.254.0.2/32", "dev": "lo"}]
    rejected("nat_ip_not_local", "192.168.0.0/18", cidr="10.254.0.0/24", interface_addresses=addresses)


def test_nat_ip_must_differ_from_router_ip():
    address = netaddr.IPAddress("10.254.0.1")
    with pytest.raises(CubeRouterAddressError) as info:
        _check_nat_ip(address, address, [])
    assert info.value.rule == "nat_ip_not_router_ip"


def test_filter_returns_the_addresses_and_fails_naming_the_rule():
    cube_router_addresses = FilterModule().filters()["cube_router_addresses"]
    assert cube_router_addresses("192.168.0.0/18")["router_cidr"] == "192.168.63.253/32"
    assert cube_router_addresses("192.168.0.0/18", "10.254.0.0/24")["router_ip"] == "10.254.0.1"
    with pytest.raises(AnsibleFilterError, match="cidr_private"):
        cube_router_addresses("192.168.0.0/18", "8.8.8.0/24")
