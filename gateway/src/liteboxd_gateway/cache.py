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
    """What the gateway needs of one sandbox Pod."""

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
    """Sandbox name -> Sandbox, with callbacks for sandboxes that disappear."""

    def __init__(self):
        self._sandboxes = {}
        self.synced = False
        self.on_removed = []

    def get(self, name: str):
        return self._sandboxes.get(name)

    def __len__(self):
        return len(self._sandboxes)

    def apply(self, event_type: str, pod: dict):
        name = (pod.get("metadata") or {}).get("name")
        if not name:
            return
        if event_type == "DELETED":
            if self._sandboxes.pop(name, None) is not None:
                self._removed(name)
        else:
            self._sandboxes[name] = Sandbox.from_pod(pod)

    def replace(self, pods):
        fresh = {}
        for pod in pods:
            sandbox = Sandbox.from_pod(pod)
            if sandbox.name:
                fresh[sandbox.name] = sandbox
        gone = self._sandboxes.keys() - fresh.keys()
        self._sandboxes = fresh
        self.synced = True
        for name in gone:
            self._removed(name)

    def _removed(self, name):
        for callback in self.on_removed:
            callback(name)


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
