# -*- coding: utf-8 -*-
# Copyright: (c) 2026, LiteBoxd platform team
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""CubeSandbox's cube-router address rules, as pure functions over netaddr.

Without a custom CIDR the addresses come from the sandbox CIDR (IPv4, /16 to /24): the router IP
is the last usable address minus one (as a /32), the internal NAT IP the last usable address
(192.168.0.0/18 -> 192.168.63.253/32 and 192.168.63.254). A custom CIDR must be IPv4, private,
aligned to its network address, /16 to /30, and clear of every interface address and of every host
route on another link; it gives router = network + 1 and NAT = network + 2. In both cases the NAT IP
must differ from the router IP and must not be a local address.

Every broken rule raises CubeRouterAddressError whose ``rule`` names it (see RULES).
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

try:
    import netaddr
except ImportError:  # the module reports missing_required_lib
    netaddr = None

SANDBOX_PREFIX_RANGE = (16, 24)
CUSTOM_PREFIX_RANGE = (16, 30)
# Go's net.IP.IsPrivate for IPv4 (what CubeSandbox calls private): RFC 1918.
PRIVATE_NETWORKS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")

RULES = {
    "sandbox_cidr_ipv4": "the sandbox CIDR must be an IPv4 CIDR",
    "sandbox_cidr_prefix": "the sandbox CIDR mask must be between /16 and /24",
    "cidr_ipv4": "the cube-router CIDR must be an IPv4 CIDR",
    "cidr_private": "the cube-router CIDR must be a private (RFC 1918) range",
    "cidr_aligned": "the cube-router CIDR must be aligned to its network address",
    "cidr_prefix": "the cube-router CIDR mask must be between /16 and /30",
    "cidr_no_interface_overlap": "the cube-router CIDR must not overlap any interface address",
    "cidr_no_route_overlap": "the cube-router CIDR must not overlap any host route on another link",
    "nat_ip_not_router_ip": "the NAT IP must differ from the router IP",
    "nat_ip_not_local": "the NAT IP must not be a local address",
}


class CubeRouterAddressError(ValueError):
    """A cube-router address rule is broken; ``rule`` is its key in RULES."""

    def __init__(self, rule, detail):
        self.rule = rule
        super(CubeRouterAddressError, self).__init__(
            "cube-router address rule %s broken: %s (%s)" % (rule, RULES[rule], detail))


def _network(value, ipv4_rule):
    """Parse ``value`` as an IPv4 network; anything else (IPv6, garbage) breaks ``ipv4_rule``."""
    try:
        network = netaddr.IPNetwork(str(value))
    except (netaddr.AddrFormatError, ValueError, TypeError) as exc:
        raise CubeRouterAddressError(ipv4_rule, "%r is not a CIDR: %s" % (value, exc))
    if network.version != 4 or "/" not in str(value):
        raise CubeRouterAddressError(ipv4_rule, "%s is not an IPv4 CIDR" % value)
    return network


def _check_prefix(network, value, rule, prefix_range):
    low, high = prefix_range
    if not low <= network.prefixlen <= high:
        raise CubeRouterAddressError(rule, "%s has mask /%d" % (value, network.prefixlen))


def _host_routes_on_other_links(routes, device):
    """Yield (network, route) for every host route that is not the default and not on ``device``."""
    for route in routes:
        if route.get("dev") == device or route["dst"] == "default":
            continue
        network = netaddr.IPNetwork(route["dst"])
        if network.version == 4 and network.prefixlen > 0:
            yield network, route


def _check_nat_ip(router_ip, nat_ip, local_addresses):
    if nat_ip == router_ip:
        raise CubeRouterAddressError("nat_ip_not_router_ip", "both are %s" % nat_ip)
    for address in local_addresses:
        if netaddr.IPNetwork(address["address"]).ip == nat_ip:
            raise CubeRouterAddressError(
                "nat_ip_not_local", "%s is configured on %s" % (nat_ip, address.get("dev", "this host")))


def derive_addresses(sandbox_cidr, cidr=None, interface_addresses=(), routes=(), device="cube-router"):
    """Return {'router_ip', 'router_cidr', 'nat_ip', 'source', 'source_cidr'} or raise CubeRouterAddressError.

    ``interface_addresses``: [{'address': '10.0.0.5/24', 'dev': 'eth0'}, ...] (all local IPv4
    addresses); ``routes``: [{'dst': '10.0.0.0/24', 'dev': 'eth0'}, ...] (the host's routes). Entries on
    ``device`` itself are the cube-router's own and never count as overlaps, so re-running is stable.
    The sandbox CIDR is checked only when it is the source of the addresses.
    """
    if cidr:
        network = _network(cidr, "cidr_ipv4")
        if not any(network in netaddr.IPNetwork(private) for private in PRIVATE_NETWORKS):
            raise CubeRouterAddressError("cidr_private", "%s is not inside %s" % (cidr, ", ".join(PRIVATE_NETWORKS)))
        if network.ip != network.network:
            raise CubeRouterAddressError("cidr_aligned", "%s has network address %s" % (cidr, network.cidr))
        _check_prefix(network, cidr, "cidr_prefix", CUSTOM_PREFIX_RANGE)
        router_ip = netaddr.IPAddress(network.first + 1)
        nat_ip = netaddr.IPAddress(network.first + 2)
        own = [a for a in interface_addresses if a.get("dev") != device]
        _check_nat_ip(router_ip, nat_ip, own)
        for address in own:
            local = netaddr.IPNetwork(address["address"])
            if local.version == 4 and local.ip in network:
                raise CubeRouterAddressError(
                    "cidr_no_interface_overlap", "%s on %s is inside %s" % (local, address.get("dev"), cidr))
        for route_network, route in _host_routes_on_other_links(routes, device):
            if route_network.first <= network.last and network.first <= route_network.last:
                raise CubeRouterAddressError(
                    "cidr_no_route_overlap", "route %s dev %s overlaps %s" % (route_network, route.get("dev"), cidr))
        source, source_cidr = "cidr", str(network.cidr)
    else:
        network = _network(sandbox_cidr, "sandbox_cidr_ipv4")
        _check_prefix(network, sandbox_cidr, "sandbox_cidr_prefix", SANDBOX_PREFIX_RANGE)
        # last usable = broadcast - 1; the router takes the one below it.
        nat_ip = netaddr.IPAddress(network.last - 1)
        router_ip = netaddr.IPAddress(network.last - 2)
        _check_nat_ip(router_ip, nat_ip, [a for a in interface_addresses if a.get("dev") != device])
        source, source_cidr = "sandbox_cidr", str(network.cidr)
    return {
        "router_ip": str(router_ip),
        "router_cidr": "%s/32" % router_ip,
        "nat_ip": str(nat_ip),
        "source": source,
        "source_cidr": source_cidr,
    }
