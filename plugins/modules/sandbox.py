#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, LiteBoxd platform team
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: sandbox
short_description: A LiteBoxd sandbox Pod with its access token and network access
version_added: 0.1.0
description:
  - Creates or deletes a sandbox Pod named O(name) (the sandbox id) in the sandbox namespace. The Pod carries
    the labels the network policies and the gateway select, C(liteboxd.io/sandbox=true),
    C(liteboxd.io/sandbox-id=<name>) and C(app.kubernetes.io/managed-by=liteboxd.sandbox_network).
    C(liteboxd.io/internet-access=true) is added when O(network.allow_internet_access) is set.
  - On creation only, generates an access token (256 random bits from Python's C(secrets.token_urlsafe)). It is stored in the
    annotation C(liteboxd.io/access-token), or only its SHA-256 (lowercase hex) in
    C(liteboxd.io/access-token-sha256) with O(token_storage=hash). It is returned once, in RV(access_token).
    Later runs keep it. O(rotate_token=true) replaces it and returns the new one.
  - When a step after the Pod was written fails (the domain policy, or the wait for Ready), the module fails
    with C(changed=true) and, when it made a new token, still returns it in RV(access_token), so a wait
    timeout never loses the token. Catch the failure with C(block)/C(rescue) to keep it (see EXAMPLES).
  - Changing only O(network) patches the Pod's labels and the sandbox's domain policy in place, so the
    sandbox keeps running. Changing the Pod spec (O(image), O(command), O(env), O(ports), O(resources)) fails
    unless O(recreate=true), because a Pod's spec cannot be changed in place.
  - O(network.allowed_domains) becomes the CiliumNetworkPolicy C(allow-domains-<name>) (C(toFQDNs) on TCP 80
    and 443, label C(liteboxd.io/policy-set=domains)). This module owns it. It is created, changed and
    deleted with the sandbox.
  - The Pod mounts no service-account token and gets no service links. A sandbox has no business with the
    Kubernetes API, and the base policies block it as well.
  - Enforcement of the network policies is Cilium's datapath on the nodes.
requirements:
  - netaddr (address and CIDR checks)
author:
  - LiteBoxd platform team (@liteboxd)
extends_documentation_fragment:
  - liteboxd.sandbox_network.attributes
  - liteboxd.sandbox_network.attributes.kubernetes
  - liteboxd.sandbox_network.k8s_auth
attributes:
  check_mode:
    support: full
    details: Writes are sent with server-side dry run. No token is generated or returned in check mode.
  diff_mode:
    support: full
    details:
      - Token annotations are shown as C(<redacted>).
      - Ansible prints no diff for a task with C(no_log=true), which a task returning a token should have. To
        preview a change with C(--check --diff), run the task once in check mode without C(no_log) (check mode
        returns no token), or register the result and show its C(diff) key.
options:
  name:
    description:
      - Sandbox id, used as the Pod name and in the C(liteboxd.io/sandbox-id) label (a DNS label, at most 63 characters).
    type: str
    required: true
  namespace:
    description: The sandbox namespace.
    type: str
    default: liteboxd-sandbox
  state:
    description: Whether the sandbox exists. V(absent) deletes the Pod and its domain policy.
    type: str
    choices: [present, absent]
    default: present
  image:
    description: Container image. Required with O(state=present).
    type: str
  command:
    description: Container command (entrypoint) as a list of arguments.
    type: list
    elements: str
  env:
    description: Environment variables of the sandbox container.
    type: dict
  ports:
    description:
      - Container ports (TCP). The first one is used in RV(access_url).
    type: list
    elements: int
    default: []
  resources:
    description:
      - Container resources, C(requests) and/or C(limits), each a map of quantities (for example C(cpu) V(500m),
        C(memory) V(512Mi)).
    type: dict
  labels:
    description:
      - Extra Pod labels. Labels the collection sets cannot be overridden. Labels dropped from this option
        are not removed from a running Pod.
    type: dict
  network:
    description: Network access of the sandbox.
    type: dict
    default: {}
    suboptions:
      allow_internet_access:
        description:
          - Label the Pod C(liteboxd.io/internet-access=true). The internet set of
            M(liteboxd.sandbox_network.sandbox_network_policies) and the egress gateway policy select that label.
        type: bool
        default: false
      allowed_domains:
        description:
          - Domains reachable on TCP 80/443 even without internet access. Use exact names (V(pypi.org)) or
            V(*.) wildcards (V(*.github.com) matches subdomains, not C(github.com) itself).
        type: list
        elements: str
        default: []
  token_storage:
    description:
      - V(plain) stores the token in C(liteboxd.io/access-token). V(hash) stores only its SHA-256 in
        C(liteboxd.io/access-token-sha256), so readers of the Pod cannot use it.
      - Switching V(plain) to V(hash) keeps the token. V(hash) to V(plain) needs O(rotate_token=true).
    type: str
    choices: [plain, hash]
    default: plain
  rotate_token:
    description: Generate a new access token for an existing sandbox and return it.
    type: bool
    default: false
  recreate:
    description:
      - Delete and create the Pod again when its spec differs. The access token is kept unless
        O(rotate_token=true).
    type: bool
    default: false
  gateway_url:
    description:
      - Base URL of the LiteBoxd gateway. RV(access_url) is C(<gateway_url>/sandbox/<name>/port/<first port>/).
    type: str
    default: ''
  wait:
    description:
      - Wait until the Pod is Ready (V(present)) or gone (V(absent)).
    type: bool
    default: true
  wait_timeout:
    description: Seconds to wait before failing.
    type: int
    default: 120
"""

EXAMPLES = r"""
- name: Sandbox with internet access and a web port
  liteboxd.sandbox_network.sandbox:
    name: sbx-7f3a
    image: ghcr.io/liteboxd/python-sandbox:3.12
    command: [python, -m, http.server, "8000"]
    ports: [8000]
    resources: {limits: {cpu: "1", memory: 1Gi}}
    network:
      allow_internet_access: true
    token_storage: hash
    gateway_url: https://gw.example.com
  register: sandbox
  no_log: true  # the result holds the access token

- name: Only PyPI and GitHub, no other internet
  liteboxd.sandbox_network.sandbox:
    name: sbx-7f3a
    image: ghcr.io/liteboxd/python-sandbox:3.12
    command: [python, -m, http.server, "8000"]
    ports: [8000]
    resources: {limits: {cpu: "1", memory: 1Gi}}
    network:
      allow_internet_access: false
      allowed_domains: [pypi.org, files.pythonhosted.org, "*.github.com"]
    token_storage: hash
  register: sandbox
  no_log: true  # the result holds the access token

- name: Create a sandbox and keep its token even when the wait for Ready times out
  block:
    - name: Sandbox with a 60 s wait
      liteboxd.sandbox_network.sandbox:
        name: sbx-9c01
        image: ghcr.io/liteboxd/python-sandbox:3.12
        ports: [8000]
        wait_timeout: 60
      register: sandbox
      no_log: true  # the result holds the access token
  rescue:
    - name: Say why it failed; sandbox.access_token still holds the token when the Pod was created
      ansible.builtin.fail:
        msg: "{{ sandbox.msg }} (token returned: {{ sandbox.access_token is defined }})"

- name: Delete it
  liteboxd.sandbox_network.sandbox:
    name: sbx-7f3a
    state: absent
"""

RETURN = r"""
access_token:
  description:
    - The access token (send it as C(X-Access-Token)). Returned only when the sandbox was created or the token
      rotated. Sensitive, so register the result under C(no_log).
  returned: when created or rotated (not in check mode), also in a failed result when a later step failed
  type: str
  sample: 3q2-7wEXAMPLEonlyZ1xk0mVbQdJ4YhWq9sPzLrT8c
access_url:
  description: C(<gateway_url>/sandbox/<name>/port/<first port>/), null without ports.
  returned: when state is present
  type: str
  sample: https://gw.example.com/sandbox/sbx-7f3a/port/8000/
pod_ip:
  description: The Pod's IP address, null until the Pod has one.
  returned: when state is present
  type: str
  sample: 10.42.0.17
phase:
  description: The Pod phase.
  returned: when state is present
  type: str
  sample: Running
ready:
  description: Whether the Pod is Running and its Ready condition is true.
  returned: when state is present
  type: bool
  sample: true
internet_access:
  description: Whether the Pod carries C(liteboxd.io/internet-access=true).
  returned: when state is present
  type: bool
  sample: true
domain_policy:
  description: Name of the sandbox's CiliumNetworkPolicy for O(network.allowed_domains), null without domains.
  returned: when state is present
  type: str
  sample: allow-domains-sbx-7f3a
actions:
  description: What happened to the Pod and to the domain policy.
  returned: always
  type: dict
  sample: {pod: created, domain_policy: absent}
"""

import secrets

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.liteboxd.sandbox_network.plugins.module_utils import k8s
from ansible_collections.liteboxd.sandbox_network.plugins.module_utils import sandbox_manifests as manifests

TOKEN_ANNOTATIONS = (manifests.TOKEN_ANNOTATION, manifests.TOKEN_SHA256_ANNOTATION)


def argument_spec():
    spec = dict(
        name=dict(type="str", required=True),
        namespace=dict(type="str", default=manifests.DEFAULT_NAMESPACE),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        image=dict(type="str"),
        command=dict(type="list", elements="str"),
        env=dict(type="dict"),
        ports=dict(type="list", elements="int", default=[]),
        resources=dict(type="dict"),
        labels=dict(type="dict"),
        network=dict(type="dict", default={}, options=dict(
            allow_internet_access=dict(type="bool", default=False),
            allowed_domains=dict(type="list", elements="str", default=[]),
        )),
        token_storage=dict(type="str", choices=["plain", "hash"], default="plain"),
        rotate_token=dict(type="bool", default=False, no_log=False),
        recreate=dict(type="bool", default=False),
        gateway_url=dict(type="str", default=""),
        wait=dict(type="bool", default=True),
        wait_timeout=dict(type="int", default=120),
    )
    spec.update(k8s.AUTH_ARG_SPEC)
    return spec


class Sandbox(object):
    """The wanted sandbox, checked before any request."""

    def __init__(self, params):
        p = params
        self.params = p
        self.name = manifests.check_name(p["name"], "name")
        self.namespace = manifests.check_name(p["namespace"], "namespace")
        if p["wait_timeout"] < 1:
            raise manifests.ManifestError("wait_timeout: must be at least 1 second")
        if p["state"] == "absent":
            return
        if not p["image"] or not p["image"].strip():
            raise manifests.ManifestError("image: required with state=present")
        network = p["network"] or {"allow_internet_access": False, "allowed_domains": []}
        self.allow_internet = network["allow_internet_access"]
        env = p["env"] or {}
        for key in env:
            if not key or "=" in key:
                raise manifests.ManifestError("env: %r is not a valid variable name" % key)
        self.ports = manifests.check_ports(p["ports"], "ports")
        self.spec = manifests.sandbox_pod_spec(
            p["image"], command=p["command"], env=env, ports=self.ports,
            resources=manifests.check_resources(p["resources"], "resources"))
        self.labels = manifests.sandbox_labels(
            self.name, self.allow_internet,
            manifests.check_labels(p["labels"], "labels", reserved=manifests.RESERVED_LABELS))
        domains = network["allowed_domains"]
        self.domain_policy = manifests.domain_policy(self.name, self.namespace, domains) if domains else None

    def pod(self, token_annotations):
        return manifests.sandbox_pod(self.name, self.namespace, self.spec, self.labels, token_annotations)


class FailedAfterWrite(Exception):
    """A failure after the Pod was written: ``result`` holds what the caller must still get (changed, the token)."""

    def __init__(self, msg, result):
        super(FailedAfterWrite, self).__init__(msg)
        self.result = result


def plan_token(sandbox, current):
    """(annotations, new token or None) for the Pod; raises ManifestError when it cannot be done."""
    p = sandbox.params
    storage = p["token_storage"]
    if current is None or p["rotate_token"]:
        token = secrets.token_urlsafe(32)
        return manifests.token_annotations(token, storage), token
    annotations = current["metadata"].get("annotations") or {}
    plain, digest = annotations.get(manifests.TOKEN_ANNOTATION), annotations.get(manifests.TOKEN_SHA256_ANNOTATION)
    if storage == "plain" and not plain:
        if digest:
            raise manifests.ManifestError(
                "token_storage: sandbox %s stores only the token's hash, which cannot be turned back into the "
                "token; set rotate_token: true to switch to plain storage with a new token" % sandbox.name)
        raise manifests.ManifestError("sandbox %s has no access token annotation; set rotate_token: true to give it "
                                      "one" % sandbox.name)
    if storage == "hash" and not (digest or plain):
        raise manifests.ManifestError("sandbox %s has no access token annotation; set rotate_token: true to give it "
                                      "one" % sandbox.name)
    if storage == "hash":
        return manifests.token_annotations(storage="hash", digest=digest or manifests.token_sha256(plain)), None
    return manifests.token_annotations(plain, "plain"), None


def spec_changed(sandbox, current):
    annotations = current["metadata"].get("annotations") or {}
    return annotations.get(manifests.SPEC_SHA256_ANNOTATION) != manifests.spec_digest(sandbox.spec)


def describe_pod(pod):
    if pod is None:
        return "the Pod does not exist"
    status = pod.get("status") or {}
    ready = [c for c in status.get("conditions") or [] if c.get("type") == "Ready"]
    return "phase %s, pod IP %s, Ready %s%s" % (
        status.get("phase") or "unknown", status.get("podIP") or "none",
        ready[0].get("status") if ready else "not reported",
        "" if status.get("phase") not in (None, "Pending") else
        " (is the Pod scheduled, and its image pullable?)")


def present(client, sandbox, check_mode):
    """Create, patch or recreate the Pod; return (result, new token or None)."""
    p = sandbox.params
    current = client.get(k8s.POD, sandbox.name, sandbox.namespace)
    if current is not None and spec_changed(sandbox, current):
        if not p["recreate"]:
            raise manifests.ManifestError(
                "sandbox %s/%s exists with a different Pod spec (image, command, env, ports or resources), which "
                "Kubernetes cannot change in place; set recreate: true to delete and create it again"
                % (sandbox.namespace, sandbox.name))
        annotations, token = plan_token(sandbox, current)
        removed = k8s.remove_object(client, k8s.POD, sandbox.name, sandbox.namespace, check_mode, current=current,
                                    fetched=True, redact=TOKEN_ANNOTATIONS)
        if check_mode:
            # The old Pod still exists, so a dry-run create would conflict: show what would be created.
            desired = sandbox.pod(annotations)
            return dict(removed, after=desired, action="recreated", diff=k8s.diff_entry(
                k8s.POD, sandbox.name, sandbox.namespace, current, desired, TOKEN_ANNOTATIONS)), None
        try:
            k8s.wait_for(client, k8s.POD, sandbox.name, sandbox.namespace, lambda pod: pod is None,
                         p["wait_timeout"], describe_pod)
        except k8s.K8sError as exc:
            raise FailedAfterWrite("%s. The old Pod is being deleted; run again to create the new one" % exc,
                                   dict(changed=True, actions={"pod": "deleted", "domain_policy": "unchanged"}))
        result = k8s.ensure_object(client, sandbox.pod(annotations), check_mode, own_spec=False, fetched=True,
                                   redact=TOKEN_ANNOTATIONS)
        result["action"] = "recreated"
    else:
        annotations, token = plan_token(sandbox, current)
        result = k8s.ensure_object(client, sandbox.pod(annotations), check_mode, own_spec=False, current=current,
                                   fetched=True, redact=TOKEN_ANNOTATIONS)
    return result, None if check_mode else token


def reconcile_domain_policy(client, sandbox, check_mode, diffs):
    if sandbox.params["state"] == "present" and sandbox.domain_policy:
        result = k8s.ensure_object(client, sandbox.domain_policy, check_mode)
    else:
        result = k8s.remove_object(client, k8s.CILIUM_NETWORK_POLICY, manifests.domain_policy_name(sandbox.name),
                                   sandbox.namespace, check_mode)
    if result["changed"]:
        diffs.append(result["diff"])
    return result


def run(module, client, sandbox):
    check_mode, p = module.check_mode, sandbox.params
    diffs = []
    if p["state"] == "absent":
        pod = k8s.remove_object(client, k8s.POD, sandbox.name, sandbox.namespace, check_mode, redact=TOKEN_ANNOTATIONS)
        if pod["changed"]:
            diffs.append(pod["diff"])
        policy = reconcile_domain_policy(client, sandbox, check_mode, diffs)
        if pod["changed"] and p["wait"] and not check_mode:
            k8s.wait_for(client, k8s.POD, sandbox.name, sandbox.namespace, lambda obj: obj is None, p["wait_timeout"],
                         describe_pod)
        return dict(changed=pod["changed"] or policy["changed"],
                    actions={"pod": pod["action"], "domain_policy": policy["action"]}), diffs
    pod_result, token = present(client, sandbox, check_mode)
    if pod_result["changed"]:
        diffs.append(pod_result["diff"])
    written = dict(changed=pod_result["changed"], actions={"pod": pod_result["action"], "domain_policy": "unknown"})
    if token:
        written["access_token"] = token
    try:
        policy = reconcile_domain_policy(client, sandbox, check_mode, diffs)
        written["changed"] = written["changed"] or policy["changed"]
        written["actions"]["domain_policy"] = policy["action"]
        pod = pod_result["after"]
        if p["wait"] and not check_mode and not manifests.pod_ready(pod):
            pod = k8s.wait_for(client, k8s.POD, sandbox.name, sandbox.namespace, manifests.pod_ready,
                               p["wait_timeout"], describe_pod)
    except (k8s.K8sError, manifests.ManifestError) as exc:
        if not written["changed"]:
            raise
        # A new token exists only in this run (with token_storage=hash, nowhere else): hand it over.
        raise FailedAfterWrite(str(exc) + (". The sandbox Pod was written with a new access token, returned in "
                                           "access_token of this failed result" if token else ""), written)
    status = (pod or {}).get("status") or {}
    output = dict(
        written,
        access_url=manifests.access_url(p["gateway_url"], sandbox.name, sandbox.ports),
        pod_ip=status.get("podIP"), phase=status.get("phase"), ready=manifests.pod_ready(pod),
        internet_access=sandbox.allow_internet,
        domain_policy=manifests.domain_policy_name(sandbox.name) if sandbox.domain_policy else None)
    return output, diffs


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    try:
        sandbox = Sandbox(module.params)
    except manifests.ManifestError as exc:
        module.fail_json(msg=str(exc))
    client = k8s.client_from_module(module)
    try:
        output, diffs = run(module, client, sandbox)
    except FailedAfterWrite as exc:
        module.fail_json(msg=str(exc), **exc.result)
    except (k8s.K8sError, manifests.ManifestError) as exc:
        module.fail_json(msg=str(exc))
    if module._diff:
        output["diff"] = diffs
    module.exit_json(**output)


if __name__ == "__main__":
    main()
