"""The sandbox Pods, kept in memory by a list + watch of the Kubernetes API.

Requests are answered from this cache only: no API call per request. The watcher lists the Pods
(paged), then watches from the list's resourceVersion. A watch that ends is resumed from the last
resourceVersion seen (bookmarks keep it fresh); a 410 Gone means the history is compacted, so the
watcher lists again and replaces the cache. Connection failures retry with jittered exponential
backoff while the cache keeps serving what it knew.
"""
import asyncio
import json
import logging
import random
from urllib.parse import quote, urlencode

import aiohttp

TOKEN_ANNOTATION = "liteboxd.io/access-token"
TOKEN_SHA256_ANNOTATION = "liteboxd.io/access-token-sha256"
LIST_PAGE_SIZE = 500

log = logging.getLogger("liteboxd_gateway.cache")


class Sandbox:
    """What the gateway needs of one sandbox Pod (``name`` is the Pod's)."""

    __slots__ = ("name", "pod_ip", "ready", "token", "token_sha256")

    def __init__(self, name, pod_ip, ready, token, token_sha256):
        self.name = name
        self.pod_ip = pod_ip
        self.ready = ready
        self.token = token
        self.token_sha256 = token_sha256

    @classmethod
    def from_pod(cls, pod: dict) -> "Sandbox":
        metadata = pod.get("metadata") or {}
        status = pod.get("status") or {}
        annotations = metadata.get("annotations") or {}
        token = annotations.get(TOKEN_ANNOTATION)
        digest = annotations.get(TOKEN_SHA256_ANNOTATION)
        pod_ip = status.get("podIP") or None
        ready = bool(pod_ip) and not metadata.get("deletionTimestamp") and any(
            condition.get("type") == "Ready" and condition.get("status") == "True"
            for condition in status.get("conditions") or ())
        return cls(metadata.get("name", ""), pod_ip, ready,
                   token.encode() if token else None,
                   digest.strip().lower().encode() if digest else None)


class ResourceGone(Exception):
    """The resourceVersion is too old (HTTP 410): list again."""


class ApiError(Exception):
    """The API server answered a list or watch with an error status."""


class SandboxCache:
    """Sandbox id -> Sandbox, with callbacks for sandboxes that disappear.

    The id is the Pod's name, or with ``id_label`` the value of that label on the Pod. Then several
    Pods may carry one id (LiteBoxd's persistent sandboxes are a Deployment's Pods, with generated
    names, two of them during a restart): requests go to a Ready one, else to the newest.
    """

    def __init__(self, id_label: str = ""):
        self.id_label = id_label
        self._sandboxes = {}  # id -> the Sandbox requests go to
        self._members = {}  # id -> {Pod name: (Sandbox, creationTimestamp)}
        self._ids = {}  # Pod name -> id
        self.synced = False
        self.on_removed = []

    def get(self, sandbox_id: str):
        return self._sandboxes.get(sandbox_id)

    def __len__(self):
        return len(self._sandboxes)

    def apply(self, event_type: str, pod: dict):
        metadata = pod.get("metadata") or {}
        name = metadata.get("name")
        if not name:
            return
        sandbox_id = self._forget(name) if event_type == "DELETED" else self._put(name, metadata, pod)
        if sandbox_id is not None:
            self._choose(sandbox_id, notify=True)

    def replace(self, pods):
        before = set(self._sandboxes)
        self._sandboxes, self._members, self._ids = {}, {}, {}
        for pod in pods:
            metadata = pod.get("metadata") or {}
            if metadata.get("name"):
                self._put(metadata["name"], metadata, pod)
        for sandbox_id in list(self._members):
            self._choose(sandbox_id, notify=False)
        self.synced = True
        for sandbox_id in before - self._sandboxes.keys():
            self._removed(sandbox_id)

    def _put(self, name, metadata, pod):
        """Record the Pod; returns its sandbox id (or the one it left), None when it has neither."""
        sandbox_id = (metadata.get("labels") or {}).get(self.id_label) if self.id_label else name
        previous = self._ids.get(name)
        if previous is not None and previous != sandbox_id:
            self._forget(name)
            self._choose(previous, notify=True)
        if not sandbox_id:
            return None
        self._ids[name] = sandbox_id
        self._members.setdefault(sandbox_id, {})[name] = (Sandbox.from_pod(pod), metadata.get("creationTimestamp") or "")
        return sandbox_id

    def _forget(self, name):
        sandbox_id = self._ids.pop(name, None)
        if sandbox_id is not None:
            self._members[sandbox_id].pop(name, None)
        return sandbox_id

    def _choose(self, sandbox_id, notify):
        members = self._members.get(sandbox_id)
        if members:
            # Ready first, then the newest (RFC 3339 timestamps of one server sort as text).
            self._sandboxes[sandbox_id] = max(members.values(), key=lambda member: (member[0].ready, member[1]))[0]
            return
        self._members.pop(sandbox_id, None)
        if self._sandboxes.pop(sandbox_id, None) is not None and notify:
            self._removed(sandbox_id)

    def _removed(self, sandbox_id):
        for callback in self.on_removed:
            callback(sandbox_id)


class PodWatcher:
    """Keeps a SandboxCache true with list + watch against the API server."""

    def __init__(self, connection, cache: SandboxCache, namespace: str, label_selector: str, metrics,
                 watch_timeout=300, backoff_initial=0.5, backoff_max=30.0):
        self.connection = connection
        self.cache = cache
        self.namespace = namespace
        self.label_selector = label_selector
        self.metrics = metrics
        self.watch_timeout = watch_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.resource_version = None
        self.synced = asyncio.Event()
        self._session = None
        self._task = None

    @property
    def pods_url(self) -> str:
        return f"{self.connection.server}/api/v1/namespaces/{quote(self.namespace, safe='')}/pods"

    def start(self):
        connector = aiohttp.TCPConnector(ssl=self.connection.ssl_context, limit=4)
        self._session = aiohttp.ClientSession(connector=connector, auto_decompress=True)
        self._task = asyncio.create_task(self.run(), name="pod-watcher")

    async def close(self):
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._session:
            await self._session.close()

    async def run(self):
        backoff = self.backoff_initial
        while True:
            try:
                if self.resource_version is None:
                    await self.list()
                await self.watch()
                backoff = self.backoff_initial
            except ResourceGone:
                log.info("pod watch: resourceVersion %s gone, listing again", self.resource_version)
                self.metrics.watch_restarts.inc("gone")
                self.resource_version = None
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ApiError, ValueError) as exc:
                self.metrics.watch_restarts.inc("error")
                delay = backoff * (0.5 + random.random() / 2)
                log.warning("pod list/watch failed (%s: %s); retrying in %.1fs, serving %d cached sandboxes",
                            type(exc).__name__, exc, delay, len(self.cache))
                await asyncio.sleep(delay)
                backoff = min(backoff * 2, self.backoff_max)

    async def _get(self, params: dict, read_timeout):
        headers = await self.connection.auth_headers()
        headers["Accept"] = "application/json"
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=read_timeout)
        response = await self._session.get(f"{self.pods_url}?{urlencode(params)}", headers=headers,
                                           timeout=timeout)
        if response.status == 410:
            response.release()
            raise ResourceGone()
        if response.status != 200:
            body = (await response.text())[:500]
            response.release()
            raise ApiError(f"HTTP {response.status} from {self.pods_url}: {body}")
        return response

    async def list(self):
        pods, params = [], {"labelSelector": self.label_selector, "limit": LIST_PAGE_SIZE}
        while True:
            response = await self._get(params, 60)
            async with response:
                page = await response.json(loads=json.loads)
            pods.extend(page.get("items") or ())
            metadata = page.get("metadata") or {}
            if not metadata.get("continue"):
                break
            params["continue"] = metadata["continue"]
        self.cache.replace(pods)
        self.resource_version = metadata.get("resourceVersion")
        self.metrics.cache_sandboxes.set(len(self.cache))
        self.metrics.cache_synced.set(1)
        self.synced.set()
        log.info("pod cache listed %d sandboxes at resourceVersion %s", len(pods), self.resource_version)

    async def watch(self):
        params = {"labelSelector": self.label_selector, "watch": "1", "allowWatchBookmarks": "true",
                  "resourceVersion": self.resource_version, "timeoutSeconds": str(self.watch_timeout)}
        response = await self._get(params, self.watch_timeout + 60)
        async with response:
            buffered = b""
            async for chunk in response.content.iter_any():
                buffered += chunk
                *lines, buffered = buffered.split(b"\n")
                for line in lines:
                    if line.strip():
                        self.handle_event(json.loads(line))

    def handle_event(self, event: dict):
        event_type, pod = event.get("type"), event.get("object") or {}
        if event_type == "ERROR":
            if pod.get("code") == 410:
                raise ResourceGone()
            raise ApiError(f"watch error: {pod.get('message', pod)}")
        self.metrics.watch_events.inc(event_type or "unknown")
        version = (pod.get("metadata") or {}).get("resourceVersion")
        if event_type in ("ADDED", "MODIFIED", "DELETED"):
            self.cache.apply(event_type, pod)
            self.metrics.cache_sandboxes.set(len(self.cache))
        if version:
            self.resource_version = version
