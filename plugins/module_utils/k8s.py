# -*- coding: utf-8 -*-
# Copyright: (c) 2026, LiteBoxd platform team
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Kubernetes plumbing shared by every Kubernetes module of the collection.

* ``AUTH_ARG_SPEC``: the one set of connection options (with the ``K8S_AUTH_*`` environment
  fallbacks kubernetes.core uses), documented once in the ``k8s_auth`` doc fragment and listed
  in the ``k8s`` action group so one ``module_defaults`` block configures every module.
* ``K8sClient``: plain JSON requests over the ``kubernetes`` package's configured ApiClient
  (kubeconfig, in-cluster or host + token), with errors turned into ``K8sError`` messages a user
  can act on: API unreachable, TLS, 401/403, a CRD that is not installed (named), refusals.
* ``ensure_object`` / ``remove_object``: get -> compare the fields we own -> create, patch or
  replace; in check mode the same request with ``dryRun=All`` so the server validates it and
  nothing is stored. Creates and replaces are always dry-run first, and refused when the server
  would drop or alter a field we own. They return ``changed`` and before/after objects for ``diff``.
* ``wait_for``: watch one object until a condition holds, with a deadline.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import json
import time
import traceback

from ansible.module_utils.basic import env_fallback
from ansible.module_utils.six.moves.urllib.parse import quote, urlencode

try:
    import urllib3
    from kubernetes import client as k8s_client
    from kubernetes import config as k8s_config
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException

    HAS_KUBERNETES = True
    KUBERNETES_IMPORT_ERROR = None
except ImportError:
    HAS_KUBERNETES = False
    KUBERNETES_IMPORT_ERROR = traceback.format_exc()

AUTH_ARG_SPEC = dict(
    kubeconfig=dict(type="path", fallback=(env_fallback, ["K8S_AUTH_KUBECONFIG"])),
    context=dict(type="str", fallback=(env_fallback, ["K8S_AUTH_CONTEXT"])),
    host=dict(type="str", fallback=(env_fallback, ["K8S_AUTH_HOST"])),
    api_key=dict(type="str", no_log=True, fallback=(env_fallback, ["K8S_AUTH_API_KEY"])),
    ca_cert=dict(type="path", aliases=["ssl_ca_cert"], fallback=(env_fallback, ["K8S_AUTH_SSL_CA_CERT"])),
    validate_certs=dict(type="bool", aliases=["verify_ssl"], fallback=(env_fallback, ["K8S_AUTH_VERIFY_SSL"])),
    request_timeout=dict(type="float", default=30.0),
)

# Metadata the server maintains; left out of diffs and never sent back.
SERVER_METADATA = ("managedFields", "resourceVersion", "uid", "creationTimestamp", "generation", "selfLink")


class K8sError(Exception):
    """An error with a message meant for the user."""


class K8sApiError(K8sError):
    """The API server answered with an error status."""

    def __init__(self, message, status, reason=None):
        super(K8sApiError, self).__init__(message)
        self.status = status
        self.reason = reason


class K8sTimeout(K8sError):
    """A wait ran out of time."""


class K8sUnreachable(K8sError):
    """No answer from the API server (refused, reset, broken off): it may be restarting."""


class Resource(object):
    """Where a kind lives in the API, and (for custom resources) the CRD that serves it."""

    def __init__(self, api_version, kind, plural, namespaced, crd=None):
        self.api_version = api_version
        self.kind = kind
        self.plural = plural
        self.namespaced = namespaced
        self.crd = crd

    def path(self, namespace=None, name=None, subresource=None):
        parts = ["/api/v1" if self.api_version == "v1" else "/apis/" + self.api_version]
        if self.namespaced and namespace:
            parts.append("namespaces/" + quote(namespace, safe=""))
        parts.append(self.plural)
        if name:
            parts.append(quote(name, safe=""))
        if subresource:
            parts.append(subresource)
        return "/".join(parts)

    def describe(self, name=None, namespace=None):
        where = "%s/%s" % (namespace, name) if self.namespaced and namespace else name
        return "%s %s" % (self.kind, where) if where else self.kind


POD = Resource("v1", "Pod", "pods", True)
NAMESPACE = Resource("v1", "Namespace", "namespaces", False)
NETWORK_POLICY = Resource("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies", True)
CILIUM_NETWORK_POLICY = Resource("cilium.io/v2", "CiliumNetworkPolicy", "ciliumnetworkpolicies", True,
                                 crd="ciliumnetworkpolicies.cilium.io")
CILIUM_EGRESS_GATEWAY_POLICY = Resource("cilium.io/v2", "CiliumEgressGatewayPolicy", "ciliumegressgatewaypolicies",
                                        False, crd="ciliumegressgatewaypolicies.cilium.io")
RESOURCES = dict(((r.api_version, r.kind), r) for r in (
    POD, NAMESPACE, NETWORK_POLICY, CILIUM_NETWORK_POLICY, CILIUM_EGRESS_GATEWAY_POLICY))


def resource_for(manifest):
    return RESOURCES[(manifest["apiVersion"], manifest["kind"])]


# ---------------------------------------------------------------------------------------------
# Client construction
# ---------------------------------------------------------------------------------------------

def build_api_client(params):
    """A configured ``kubernetes.client.ApiClient`` from the AUTH_ARG_SPEC options.

    ``host`` alone (with ``api_key``) needs no kubeconfig; otherwise the kubeconfig (the
    ``kubeconfig`` option, else ``$KUBECONFIG`` or ``~/.kube/config``) is loaded, falling back to
    the in-cluster service account; explicit options override what the kubeconfig says.
    """
    configuration = k8s_client.Configuration()
    kubeconfig, context, host = params.get("kubeconfig"), params.get("context"), params.get("host")
    try:
        if kubeconfig or context or not host:
            try:
                k8s_config.load_kube_config(config_file=kubeconfig, context=context,
                                            client_configuration=configuration, persist_config=False)
            except (ConfigException, IOError, OSError) as exc:
                if kubeconfig or context:
                    raise K8sError("cannot load kubeconfig %s: %s" % (kubeconfig or "(default)", exc))
                try:
                    k8s_config.load_incluster_config(client_configuration=configuration)
                except ConfigException:
                    raise K8sError("no Kubernetes API configured: set host (and api_key) or kubeconfig, "
                                   "or the K8S_AUTH_HOST / K8S_AUTH_KUBECONFIG environment variables (%s)" % exc)
    except K8sError:
        raise
    except Exception as exc:  # the kubeconfig loader raises assorted errors on malformed files
        raise K8sError("cannot load kubeconfig %s: %s" % (kubeconfig or "(default)", exc))
    if host:
        configuration.host = host.rstrip("/")
    if params.get("api_key"):
        configuration.api_key = {"authorization": "Bearer " + params["api_key"]}
        # The kubeconfig loader installs a hook that re-reads the kubeconfig user's token.
        configuration.refresh_api_key_hook = None
    if params.get("ca_cert"):
        configuration.ssl_ca_cert = params["ca_cert"]
    if params.get("validate_certs") is not None:
        configuration.verify_ssl = params["validate_certs"]
    # One retry: an unreachable API should fail fast with our message, not after urllib3's three.
    configuration.retries = 1
    return k8s_client.ApiClient(configuration)


def client_from_module(module):
    """A ``K8sClient`` for an AnsibleModule using AUTH_ARG_SPEC; fails the module cleanly."""
    if not HAS_KUBERNETES:
        from ansible.module_utils.basic import missing_required_lib
        module.fail_json(msg=missing_required_lib("kubernetes"), exception=KUBERNETES_IMPORT_ERROR)
    try:
        return K8sClient(build_api_client(module.params), request_timeout=module.params.get("request_timeout"))
    except K8sError as exc:
        module.fail_json(msg=str(exc))


# ---------------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------------

def _status_message(payload, fallback):
    if isinstance(payload, dict) and payload.get("message"):
        return payload["message"]
    return fallback


class K8sClient(object):
    """JSON requests to the API server; every failure is a ``K8sError`` with a clear message."""

    def __init__(self, api_client, request_timeout=30.0):
        self.api_client = api_client
        self.request_timeout = request_timeout or 30.0

    @property
    def host(self):
        return self.api_client.configuration.host

    def request(self, method, path, query=None, body=None, content_type="application/json",
                resource=None, timeout=None, stream=False):
        """Return the decoded JSON answer (or the raw streaming response when ``stream``)."""
        url_path = path + ("?" + urlencode(query) if query else "")
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        method, url, headers, body, _post = self.api_client.param_serialize(
            method, url_path, header_params=headers, body=body, auth_settings=["BearerToken"])
        try:
            response = self.api_client.call_api(method, url, header_params=headers, body=body,
                                                _request_timeout=timeout or self.request_timeout)
        except ApiException as exc:  # the REST client reports TLS failures this way (status 0)
            raise K8sError("TLS connection to the Kubernetes API at %s failed: %s (check ca_cert / validate_certs)"
                           % (self.host, (exc.reason or "").replace("\n", ": ")))
        except urllib3.exceptions.HTTPError as exc:
            reason = getattr(exc, "reason", None) or exc
            if isinstance(reason, urllib3.exceptions.SSLError):
                raise K8sError("TLS connection to the Kubernetes API at %s failed: %s (check ca_cert / "
                               "validate_certs)" % (self.host, reason))
            raise K8sUnreachable("cannot reach the Kubernetes API at %s: %s" % (self.host, reason))
        if stream and 200 <= response.status < 300:
            return response.response
        try:
            data = response.read()
        except urllib3.exceptions.HTTPError as exc:
            raise K8sUnreachable("the Kubernetes API at %s broke off the answer to %s %s: %s"
                                 % (self.host, method, path, exc))
        try:
            payload = json.loads(data) if data else None
        except ValueError:
            payload = None
        if 200 <= response.status < 300:
            return payload
        raise self._error(response.status, response.reason, payload, data, method, path, resource)

    def _error(self, status, reason, payload, data, method, path, resource):
        text = data.decode("utf-8", "replace").strip() if isinstance(data, bytes) else str(data or "")
        message = _status_message(payload, text or reason)
        if status == 401:
            return K8sApiError("the Kubernetes API at %s rejected the credentials (401 Unauthorized): check api_key "
                               "or the kubeconfig user" % self.host, status, reason)
        if status == 403:
            return K8sApiError("forbidden (403) by the Kubernetes API at %s: %s" % (self.host, message), status, reason)
        # A Status object with details means "this object is missing"; anything else (the plain
        # "404 page not found") means the API group/resource itself is not served.
        is_object_404 = isinstance(payload, dict) and payload.get("kind") == "Status" and payload.get("details")
        if status == 404 and resource is not None and resource.crd and not is_object_404:
            missing = (self.host, resource.plural, resource.api_version, resource.crd)
            return K8sApiError("the Kubernetes API at %s does not serve %s (%s): the CustomResourceDefinition %s is "
                               "not installed (install or upgrade Cilium)" % missing, status, reason)
        return K8sApiError("%s %s failed (%s %s): %s" % (method, path, status, reason or "", message), status,
                           payload.get("reason") if isinstance(payload, dict) else reason)

    # -- object operations -------------------------------------------------------------------
    def get(self, resource, name, namespace=None):
        """The object, or None when it does not exist."""
        try:
            return self.request("GET", resource.path(namespace, name), resource=resource)
        except K8sApiError as exc:
            if exc.status == 404 and exc.reason == "NotFound":
                return None
            raise

    def list(self, resource, namespace=None, label_selector=None):
        query = {"labelSelector": label_selector} if label_selector else None
        return self.request("GET", resource.path(namespace), query=query, resource=resource).get("items") or []

    def create(self, resource, body, dry_run=False):
        namespace = body["metadata"].get("namespace")
        return self.request("POST", resource.path(namespace), query=_dry_run(dry_run), body=body, resource=resource)

    def replace(self, resource, body, dry_run=False):
        meta = body["metadata"]
        return self.request("PUT", resource.path(meta.get("namespace"), meta["name"]), query=_dry_run(dry_run),
                            body=body, resource=resource)

    def patch(self, resource, name, namespace, patch, dry_run=False, subresource=None):
        """JSON merge patch (RFC 7386): works for built-in and custom resources alike."""
        return self.request("PATCH", resource.path(namespace, name, subresource), query=_dry_run(dry_run),
                            body=patch, content_type="application/merge-patch+json", resource=resource)

    def delete(self, resource, name, namespace=None, dry_run=False):
        """Return True when something was deleted, False when it was already gone."""
        try:
            self.request("DELETE", resource.path(namespace, name), query=_dry_run(dry_run), resource=resource)
            return True
        except K8sApiError as exc:
            if exc.status == 404 and exc.reason == "NotFound":
                return False
            raise

    def watch(self, resource, namespace, name, resource_version, timeout_seconds):
        """Yield watch events (dicts with ``type`` and ``object``) for one object until the server ends it."""
        query = {"watch": "true", "fieldSelector": "metadata.name=" + name,
                 "timeoutSeconds": str(max(1, int(timeout_seconds)))}
        if resource_version:
            query["resourceVersion"] = resource_version
        response = self.request("GET", resource.path(namespace), query=query, resource=resource, stream=True,
                                timeout=(self.request_timeout, timeout_seconds + 10))
        buffered = b""
        try:
            for chunk in response.stream(amt=None, decode_content=False):
                buffered += chunk
                while b"\n" in buffered:
                    line, buffered = buffered.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
        except urllib3.exceptions.HTTPError:
            return  # the caller re-reads and watches again until its deadline
        finally:
            response.release_conn()


def _dry_run(dry_run):
    return {"dryRun": "All"} if dry_run else None


# ---------------------------------------------------------------------------------------------
# Desired state vs current state
# ---------------------------------------------------------------------------------------------

def differences(desired, current, path=""):
    """Paths where ``current`` does not hold what ``desired`` says.

    Dictionaries may carry extra keys only when those are empty (a server default such as
    ``egressGateways: []``); lists must have the same length; scalars must be equal. So a value
    changed or content added by hand is found, and server defaulting is not a difference.
    """
    if isinstance(desired, dict):
        if not isinstance(current, dict):
            return [path or "."]
        found = []
        for key, value in desired.items():
            found.extend(differences(value, current.get(key), "%s.%s" % (path, key)))
        for key, value in current.items():
            if key not in desired and value not in (None, "", [], {}):
                found.append("%s.%s" % (path, key))
        return found
    if isinstance(desired, list):
        if not isinstance(current, list) or len(current) != len(desired):
            return [path or "."]
        found = []
        for index, (want, have) in enumerate(zip(desired, current)):
            found.extend(differences(want, have, "%s[%d]" % (path, index)))
        return found
    return [] if desired == current else [path or "."]


def _metadata_patch(desired_meta, current_meta):
    """Labels/annotations to set (value) or remove (None) so current carries what desired owns."""
    patch = {}
    for field in ("labels", "annotations"):
        have = current_meta.get(field) or {}
        change = dict((key, value) for key, value in (desired_meta.get(field) or {}).items()
                      if have.get(key) != value and not (value is None and key not in have))
        if change:
            patch[field] = change
    return patch


def _without_none(mapping):
    return dict((key, value) for key, value in (mapping or {}).items() if value is not None)


def for_diff(obj, redact=()):
    """The object as a user wants to read it in a diff: no server bookkeeping, secrets redacted."""
    if not obj:
        return {}
    shown = copy.deepcopy(obj)
    meta = shown.get("metadata") or {}
    for key in SERVER_METADATA:
        meta.pop(key, None)
    annotations = meta.get("annotations") or {}
    for key in redact:
        if key in annotations:
            annotations[key] = "<redacted>"
    shown.pop("status", None)
    return shown


def diff_entry(resource, name, namespace, before, after, redact=()):
    header = resource.describe(name, namespace)
    return {"before": for_diff(before, redact), "after": for_diff(after, redact),
            "before_header": header, "after_header": header}


def ensure_object(client, desired, check_mode, own_spec=True, current=None, fetched=False, redact=()):
    """Make the server hold ``desired``; return ``{changed, action, before, after, diff}``.

    Owned fields: the labels and annotations ``desired`` names (a value of None means "must be
    absent"), and with ``own_spec`` the whole ``spec``, which is put back exactly when it was
    changed by hand (PUT with the current resourceVersion). Other labels and annotations are kept.
    ``current`` (with ``fetched=True``) skips the GET when the caller already listed the objects.
    In check mode every write is sent with ``dryRun=All``: the server validates and stores nothing.
    """
    resource = resource_for(desired)
    meta = desired["metadata"]
    name, namespace = meta["name"], meta.get("namespace")
    if not fetched:
        current = client.get(resource, name, namespace)
    if current is None:
        body = copy.deepcopy(desired)
        body["metadata"]["labels"] = _without_none(meta.get("labels"))
        body["metadata"]["annotations"] = _without_none(meta.get("annotations"))
        write, action = client.create, "created"
    else:
        spec_changed = own_spec and differences(desired.get("spec"), current.get("spec"))
        meta_patch = _metadata_patch(meta, current.get("metadata") or {})
        body = None
        if spec_changed:
            body = copy.deepcopy(current)
            body.pop("status", None)
            body["metadata"].pop("managedFields", None)
            for field in ("labels", "annotations"):
                merged = dict(body["metadata"].get(field) or {})
                merged.update(meta.get(field) or {})
                body["metadata"][field] = _without_none(merged)
            body["spec"] = copy.deepcopy(desired["spec"])
            write, action = client.replace, "replaced"
        elif meta_patch:
            after = client.patch(resource, name, namespace, {"metadata": meta_patch}, dry_run=check_mode)
            action = "patched"
        else:
            after, action = current, "unchanged"
    if action in ("created", "replaced") and (own_spec or check_mode):
        after = write(resource, body, dry_run=True)
        dropped = own_spec and differences(desired.get("spec"), after.get("spec"))
        if dropped:
            # An older schema prunes fields it does not know (a v1.20 server drops endPort, for one):
            # never store a policy the cluster would not enforce as written.
            raise K8sError("the Kubernetes API at %s would drop or alter %s of %s: its schema is older than this "
                           "collection needs (upgrade Kubernetes / Cilium and its CRDs); nothing was changed" % (
                               client.host, ", ".join("spec" + p for p in dropped),
                               resource.describe(name, namespace)))
    if action in ("created", "replaced") and not check_mode:
        after = write(resource, body)
    return {"changed": action != "unchanged", "action": action, "kind": resource.kind, "name": name,
            "namespace": namespace, "before": current, "after": after,
            "diff": diff_entry(resource, name, namespace, current, after, redact)}


def remove_object(client, resource, name, namespace, check_mode, current=None, fetched=False, redact=()):
    """Delete the object if present; ``{changed, action, before, after, diff}`` like ensure_object."""
    if not fetched:
        current = client.get(resource, name, namespace)
    deleted = current is not None and client.delete(resource, name, namespace, dry_run=check_mode)
    return {"changed": bool(deleted), "action": "deleted" if deleted else "absent", "kind": resource.kind,
            "name": name, "namespace": namespace, "before": current, "after": None,
            "diff": diff_entry(resource, name, namespace, current, None, redact)}


# ---------------------------------------------------------------------------------------------
# Waiting
# ---------------------------------------------------------------------------------------------

def wait_for(client, resource, name, namespace, condition, timeout, describe_state):
    """Watch one object until ``condition(obj_or_None)`` holds; return the object.

    The watch restarts from a fresh GET whenever the server ends it, until ``timeout`` seconds
    have passed; then ``K8sTimeout`` says what was awaited and the last state seen
    (``describe_state(obj)``).
    """
    deadline = time.monotonic() + timeout
    obj = client.get(resource, name, namespace)
    while not condition(obj):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise K8sTimeout("timed out after %ss waiting for %s: %s" % (
                timeout, resource.describe(name, namespace), describe_state(obj)))
        version = obj["metadata"]["resourceVersion"] if obj else None
        events = client.watch(resource, namespace, name, version, min(remaining, 60))
        try:
            for event in events:
                if event.get("type") == "ERROR":
                    break  # e.g. 410 Gone: the version is too old; re-read and watch again
                obj = None if event["type"] == "DELETED" else event["object"]
                if condition(obj) or time.monotonic() >= deadline:
                    break
        finally:
            events.close()
        if not condition(obj):
            obj = client.get(resource, name, namespace)
    return obj
