# -*- coding: utf-8 -*-
# Copyright: (c) 2026, LiteBoxd platform team
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Pure builders for the sandbox cluster plane: the sandbox Pod, its network policies and the
Cilium egress gateway policy, plus the input checks they need.

Shared by the modules and (through them) the ``sandbox_policies`` role, so every object has
exactly one definition. Nothing here talks to a cluster. Kubernetes NetworkPolicy is used where
it can say the rule; Cilium policies where it cannot (entities, the DNS proxy rule, FQDNs,
deny rules). Input is checked here as well as by the API server, because an older server
(e.g. v1.20) silently drops what its schema does not know (CEL rules, ``endPort``).
Names, labels and annotations are the ones LiteBoxd uses, so existing installs keep working.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json
import re

from ansible.module_utils.six import text_type

try:
    import netaddr
except ImportError:  # reported when an address is checked
    netaddr = None

DEFAULT_NAMESPACE = "liteboxd-sandbox"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "liteboxd.sandbox_network"
POLICY_SET_LABEL = "liteboxd.io/policy-set"
SANDBOX_LABEL = "liteboxd.io/sandbox"
SANDBOX_ID_LABEL = "liteboxd.io/sandbox-id"
INTERNET_LABEL = "liteboxd.io/internet-access"
TOKEN_ANNOTATION = "liteboxd.io/access-token"
TOKEN_SHA256_ANNOTATION = "liteboxd.io/access-token-sha256"
SPEC_SHA256_ANNOTATION = "liteboxd.io/spec-sha256"
EGRESS_NODE_LABEL = "liteboxd.io/role"
EGRESS_GATEWAY_POLICY_NAME = "liteboxd-sandbox-egress-via-node"
SANDBOX_CONTAINER = "sandbox"

# Addresses a sandbox never reaches directly: RFC 1918, shared address space (CGNAT), and
# link-local (cloud metadata at 169.254.169.254 lives there).
PRIVATE_CIDRS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16")
GATEWAY_SOURCES = ("cluster", "host")
DEFAULT_GATEWAY_NAMESPACE = "liteboxd"
DEFAULT_GATEWAY_POD_LABELS = {"app": "liteboxd-gateway"}
DEFAULT_DNS_NAMESPACE = "kube-system"
DEFAULT_DNS_POD_LABELS = {"k8s-app": "kube-dns"}
DOMAIN_POLICY_PORTS = (80, 443)

INTERNET_POLICY_NAME = "allow-internet-egress"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_HOST_LABEL = re.compile(r"^[a-z0-9_]([-a-z0-9_]*[a-z0-9_])?$")
RESERVED_LABELS = (MANAGED_BY_LABEL, SANDBOX_LABEL, SANDBOX_ID_LABEL, INTERNET_LABEL)


class ManifestError(ValueError):
    """Input that cannot become a valid object; the message names the option."""


# ---------------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------------

def check_name(value, option):
    """A DNS-1123 label: the sandbox name is also a label value and part of object names."""
    if not isinstance(value, text_type) or len(value) > 63 or not _DNS_LABEL.match(value):
        raise ManifestError("%s: %r is not a valid name (lowercase letters, digits and '-', starting and ending "
                            "with a letter or digit, at most 63 characters)" % (option, value))
    return value


def _netaddr(option):
    if netaddr is None:
        raise ManifestError("%s: checking addresses needs the netaddr Python library on the controller" % option)


def check_cidr(value, option, version=None):
    """A network in canonical form (no host bits), optionally of one IP version."""
    addr, sep, plen = text_type(value).partition("/")
    _netaddr(option)
    try:
        # The address strictly (INET_PTON): older netaddr would read "10.1" as 10.1.0.0.
        ip = netaddr.IPAddress(addr, flags=netaddr.INET_PTON)
        if sep and not (plen.isdigit() and int(plen) <= (32 if ip.version == 4 else 128)):
            raise ValueError(plen)
        network = netaddr.IPNetwork("%s/%s" % (ip, plen if sep else ip.netmask_bits())).cidr
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise ManifestError("%s: %r is not a CIDR (e.g. 10.0.0.0/8)" % (option, value))
    if "/" not in text_type(value):
        raise ManifestError("%s: %r has no prefix length (e.g. %s/32)" % (option, value, value))
    if text_type(network) != text_type(value):
        raise ManifestError("%s: %r has host bits set; the network is %s" % (option, value, network))
    if version and network.version != version:
        raise ManifestError("%s: %r is not an IPv%d CIDR" % (option, value, version))
    return text_type(network)


def check_cidrs(values, option, version=None):
    return [check_cidr(value, "%s[%d]" % (option, index), version) for index, value in enumerate(values)]


def check_ipv4(value, option):
    _netaddr(option)
    try:
        return text_type(netaddr.IPAddress(text_type(value), 4, flags=netaddr.INET_PTON))
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise ManifestError("%s: %r is not an IPv4 address" % (option, value))


def check_port(value, option):
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ManifestError("%s: %r is not a port number (1-65535); ranges are not supported" % (option, value))
    return value


def check_ports(values, option):
    ports = [check_port(value, "%s[%d]" % (option, index)) for index, value in enumerate(values)]
    if len(set(ports)) != len(ports):
        raise ManifestError("%s: ports are listed more than once: %s" % (option, ports))
    return ports


def check_labels(labels, option, reserved=()):
    """Label keys ([prefix/]name) and values as Kubernetes accepts them."""
    checked = {}
    for key, value in (labels or {}).items():
        value = "" if value is None else (text_type(value).lower() if isinstance(value, bool) else text_type(value))
        prefix, _sep, name = text_type(key).rpartition("/")
        if (not _LABEL_NAME.match(name) or len(name) > 63
                or (prefix and (len(prefix) > 253 or not all(_DNS_LABEL.match(p) for p in prefix.split("."))))):
            raise ManifestError("%s: %r is not a valid label key" % (option, key))
        if value and (len(value) > 63 or not _LABEL_NAME.match(value)):
            raise ManifestError("%s: the value %r of %r is not a valid label value" % (option, value, key))
        if key in reserved:
            raise ManifestError("%s: %r is set by the collection and cannot be overridden" % (option, key))
        checked[key] = value
    return checked


def domain_selector(value, option):
    """``example.com`` -> ``{matchName: example.com}``; ``*.example.com`` -> ``{matchPattern: ...}``.

    Only a leading ``*.`` wildcard is accepted (Cilium matches it against one or more labels in
    front of the suffix, never the bare suffix). Names are lowercased: DNS is case-insensitive.
    """
    if not isinstance(value, text_type):
        raise ManifestError("%s: %r is not a domain name" % (option, value))
    name = value.strip().lower().rstrip(".")
    wildcard = name.startswith("*.")
    host = name[2:] if wildcard else name
    labels = host.split(".")
    _netaddr(option)
    is_address = netaddr.valid_ipv4(host, netaddr.INET_PTON) or netaddr.valid_ipv6(host)
    if (is_address or len(host) > 253 or len(labels) < (2 if wildcard else 1)
            or not all(len(label) <= 63 and _HOST_LABEL.match(label) for label in labels)):
        raise ManifestError("%s: %r is not a domain name or a '*.' wildcard pattern (e.g. example.com, "
                            "*.example.com)" % (option, value))
    return {"matchPattern": name} if wildcard else {"matchName": name}


def check_resources(resources, option):
    """Container resources: only ``requests`` and ``limits``, each a map of quantities."""
    checked = {}
    for key, quantities in (resources or {}).items():
        if key not in ("requests", "limits"):
            raise ManifestError("%s: unknown field %r (allowed: requests, limits)" % (option, key))
        if not isinstance(quantities, dict):
            raise ManifestError("%s.%s: must be a map such as {cpu: 500m, memory: 512Mi}" % (option, key))
        checked[key] = dict((text_type(name), text_type(q)) for name, q in quantities.items())
    return checked


# ---------------------------------------------------------------------------------------------
# Common pieces
# ---------------------------------------------------------------------------------------------

def owned_labels(policy_set, extra=None):
    labels = {MANAGED_BY_LABEL: MANAGED_BY, POLICY_SET_LABEL: policy_set}
    labels.update(extra or {})
    return labels


def owned_selector(policy_sets):
    """Label selector string for the objects of some policy sets this collection owns."""
    return "%s=%s,%s in (%s)" % (MANAGED_BY_LABEL, MANAGED_BY, POLICY_SET_LABEL, ",".join(sorted(policy_sets)))


def _metadata(name, namespace, labels, description):
    meta = {"name": name, "labels": labels, "annotations": {"liteboxd.io/description": description}}
    if namespace:
        meta["namespace"] = namespace
    return meta


def _network_policy(name, namespace, policy_set, description, spec):
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": _metadata(name, namespace, owned_labels(policy_set), description), "spec": spec}


def _cilium_policy(name, namespace, labels, description, spec):
    return {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
            "metadata": _metadata(name, namespace, labels, description), "spec": spec}


def _sandbox_selector():
    return {"matchLabels": {SANDBOX_LABEL: "true"}}


def _cilium_namespaced(labels, namespace):
    """A Cilium endpoint selector for pods with ``labels`` in ``namespace``."""
    selector = dict(("k8s:%s" % key, value) for key, value in labels.items())
    selector["k8s:io.kubernetes.pod.namespace"] = namespace
    return {"matchLabels": selector}


# ---------------------------------------------------------------------------------------------
# Policy sets
# ---------------------------------------------------------------------------------------------

def base_policies(namespace=DEFAULT_NAMESPACE, gateway_sources=GATEWAY_SOURCES,
                  gateway_namespace=DEFAULT_GATEWAY_NAMESPACE, gateway_pod_labels=None, gateway_ports=(),
                  dns_namespace=DEFAULT_DNS_NAMESPACE, dns_pod_labels=None, private_cidrs=PRIVATE_CIDRS):
    """The base set: default deny in and out, DNS to kube-dns only (through Cilium's DNS proxy,
    so FQDN policies learn names), no K8s API / nodes / metadata / private ranges, and ingress
    only from the gateway (in-cluster pods and/or hosts) on ``gateway_ports`` (empty: any port)."""
    gateway_pod_labels = DEFAULT_GATEWAY_POD_LABELS if gateway_pod_labels is None else gateway_pod_labels
    dns_pod_labels = DEFAULT_DNS_POD_LABELS if dns_pod_labels is None else dns_pod_labels
    policies = [
        _network_policy("default-deny-all", namespace, "base",
                        "Deny all ingress and egress of every pod in the namespace unless another policy allows it.",
                        {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
        _cilium_policy("allow-dns", namespace, owned_labels("base"),
                       "Sandboxes may resolve names through kube-dns only; every query passes Cilium's DNS proxy "
                       "so toFQDNs policies learn the addresses.",
                       {"endpointSelector": _sandbox_selector(),
                        "egress": [{"toEndpoints": [_cilium_namespaced(dns_pod_labels, dns_namespace)],
                                    "toPorts": [{"ports": [{"port": "53", "protocol": "UDP"},
                                                           {"port": "53", "protocol": "TCP"}],
                                                 "rules": {"dns": [{"matchPattern": "*"}]}}]}]}),
        _cilium_policy("deny-k8s-api", namespace, owned_labels("base"),
                       "Sandboxes never reach the Kubernetes API, the nodes, link-local/cloud metadata or private "
                       "ranges; deny rules win over every allow rule.",
                       {"endpointSelector": _sandbox_selector(),
                        "egressDeny": [{"toEntities": ["kube-apiserver", "host", "remote-node"]}]
                        + ([{"toCIDRSet": [{"cidr": cidr} for cidr in private_cidrs]}] if private_cidrs else [])}),
    ]
    ports = [{"port": port, "protocol": "TCP"} for port in gateway_ports]
    if "cluster" in gateway_sources:
        rule = {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": gateway_namespace}},
                          "podSelector": {"matchLabels": dict(gateway_pod_labels)}}]}
        if ports:
            rule["ports"] = ports
        policies.append(_network_policy(
            "allow-gateway-ingress", namespace, "base",
            "Sandboxes accept connections only from the LiteBoxd gateway pods.",
            {"podSelector": _sandbox_selector(), "policyTypes": ["Ingress"], "ingress": [rule]}))
    if "host" in gateway_sources:
        rule = {"fromEntities": ["host", "remote-node"]}
        if ports:
            rule["toPorts"] = [{"ports": [{"port": text_type(p["port"]), "protocol": "TCP"} for p in ports]}]
        policies.append(_cilium_policy(
            "allow-gateway-ingress-from-hosts", namespace, owned_labels("base"),
            "Sandboxes accept connections from the cluster's nodes, where the LiteBoxd gateway runs as a host "
            "service.", {"endpointSelector": _sandbox_selector(), "ingress": [rule]}))
    return policies


def internet_policies(namespace=DEFAULT_NAMESPACE, private_cidrs=PRIVATE_CIDRS):
    """The internet set: pods labelled ``liteboxd.io/internet-access=true`` reach any public IPv4
    address on every port and protocol (a NetworkPolicy rule without ports), private ranges
    excepted."""
    block = {"cidr": "0.0.0.0/0"}
    excepted = [cidr for cidr in private_cidrs if ":" not in cidr]
    if excepted:
        block["except"] = excepted
    return [_network_policy(
        INTERNET_POLICY_NAME, namespace, "internet",
        "Sandboxes labelled liteboxd.io/internet-access=true reach any public address, any port and protocol.",
        {"podSelector": {"matchLabels": {INTERNET_LABEL: "true"}}, "policyTypes": ["Egress"],
         "egress": [{"to": [{"ipBlock": block}]}]})]


def domain_policy_name(sandbox):
    return "allow-domains-%s" % sandbox


def domain_policy(sandbox, namespace, domains):
    """The per-sandbox allow-list: ``toFQDNs`` on TCP 80/443 for the sandbox's Pod only."""
    selectors = [domain_selector(domain, "network.allowed_domains[%d]" % index) for index, domain in enumerate(domains)]
    unique = []
    for selector in selectors:
        if selector not in unique:
            unique.append(selector)
    return _cilium_policy(
        domain_policy_name(sandbox), namespace, owned_labels("domains", {SANDBOX_ID_LABEL: sandbox}),
        "Sandbox %s may reach its allowed domains on ports 80 and 443." % sandbox,
        {"endpointSelector": {"matchLabels": {SANDBOX_ID_LABEL: sandbox}},
         "egress": [{"toFQDNs": unique,
                     "toPorts": [{"ports": [{"port": text_type(p), "protocol": "TCP"} for p in DOMAIN_POLICY_PORTS]}]}]})


def egress_gateway_policy(egress_gateways, name=EGRESS_GATEWAY_POLICY_NAME, namespace=DEFAULT_NAMESPACE,
                          destination_cidrs=("0.0.0.0/0",), excluded_cidrs=PRIVATE_CIDRS):
    """The cluster-scoped CiliumEgressGatewayPolicy for internet-enabled sandboxes.

    ``egress_gateways``: ``[{node_selector, egress_ip, interface}]``. One entry fills
    ``egressGateway``; several fill ``egressGateways`` (Cilium's multi-gateway form, which makes
    Cilium ignore ``egressGateway``; it is still set to the first entry because the schema requires it).
    """
    def gateway(entry):
        out = {"nodeSelector": {"matchLabels": dict(entry["node_selector"])}, "egressIP": entry["egress_ip"]}
        if entry.get("interface"):
            out["interface"] = entry["interface"]
        return out

    spec = {"selectors": [{"podSelector": {"matchLabels": {INTERNET_LABEL: "true",
                                                           "io.kubernetes.pod.namespace": namespace}}}],
            "destinationCIDRs": list(destination_cidrs),
            "egressGateway": gateway(egress_gateways[0])}
    if excluded_cidrs:
        spec["excludedCIDRs"] = list(excluded_cidrs)
    if len(egress_gateways) > 1:
        spec["egressGateways"] = [gateway(entry) for entry in egress_gateways]
    return {"apiVersion": "cilium.io/v2", "kind": "CiliumEgressGatewayPolicy",
            "metadata": _metadata(name, None, owned_labels("egress-gateway"),
                                  "Internet-enabled LiteBoxd sandboxes leave the cluster through the egress node(s)."),
            "spec": spec}


# ---------------------------------------------------------------------------------------------
# Sandbox Pod
# ---------------------------------------------------------------------------------------------

def sandbox_labels(name, allow_internet, extra=None):
    """Labels of a sandbox Pod; ``None`` marks the internet label as "must be absent"."""
    labels = dict(extra or {})
    labels.update({SANDBOX_LABEL: "true", SANDBOX_ID_LABEL: name, MANAGED_BY_LABEL: MANAGED_BY,
                   INTERNET_LABEL: "true" if allow_internet else None})
    return labels


def sandbox_pod_spec(image, command=None, env=None, ports=(), resources=None):
    """The Pod spec. No service-account token is mounted and no service links are injected: a
    sandbox has no business with the Kubernetes API (the policies block it as well)."""
    container = {"name": SANDBOX_CONTAINER, "image": image}
    if command:
        container["command"] = list(command)
    if env:
        container["env"] = [{"name": key, "value": text_type(env[key])} for key in sorted(env)]
    if ports:
        container["ports"] = [{"containerPort": port, "protocol": "TCP"} for port in ports]
    if resources:
        container["resources"] = resources
    return {"containers": [container], "automountServiceAccountToken": False, "enableServiceLinks": False}


def spec_digest(spec):
    return hashlib.sha256(json.dumps(spec, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def token_sha256(token):
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_annotations(token=None, storage="plain", digest=None):
    """The token annotations for ``storage``; the other form is marked absent (None)."""
    if storage == "hash":
        return {TOKEN_SHA256_ANNOTATION: digest or token_sha256(token), TOKEN_ANNOTATION: None}
    return {TOKEN_ANNOTATION: token, TOKEN_SHA256_ANNOTATION: None}


def sandbox_pod(name, namespace, spec, labels, annotations):
    annotations = dict(annotations)
    annotations[SPEC_SHA256_ANNOTATION] = spec_digest(spec)
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels, "annotations": annotations},
            "spec": spec}


def access_url(gateway_url, name, ports):
    """``<gateway_url>/sandbox/<name>/port/<first port>/`` (LiteBoxd's path form), None without ports."""
    if not ports:
        return None
    return "%s/sandbox/%s/port/%d/" % ((gateway_url or "").rstrip("/"), name, ports[0])


def pod_ready(pod):
    if not pod:
        return False
    status = pod.get("status") or {}
    return status.get("phase") == "Running" and any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
