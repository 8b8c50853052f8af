"""Process lifecycle: configuration, workers, listeners, readiness and graceful drain.

``--workers N`` forks N processes that each bind the proxy port with SO_REUSEPORT (the kernel
spreads connections) and run their own event loop and Pod cache; worker i serves metrics on
metrics-port + i. On SIGTERM a worker reports not-ready on /readyz, waits ``--drain-delay`` so
load balancers stop sending, closes WebSockets with 1001, stops listening and gives in-flight
requests ``--shutdown-timeout`` to finish.
"""
import asyncio
import ctypes
import gc
import importlib.machinery
import logging
import os
import signal
import ssl
import sys

from aiohttp import web

from . import config as config_module
from . import kube, logs
from .app import Gateway
from .cache import PodWatcher, SandboxCache
from .http1 import ClientConnection, ClientConnections
from .metrics import GatewayMetrics, metrics_app
from .version import __version__

log = logging.getLogger("liteboxd_gateway")
PR_SET_PDEATHSIG = 1  # linux/prctl.h
# Allocations of container objects between collections of the youngest generation (the default is 700).
# A request allocates a few dozen and reference counting frees nearly all of them; at the default, a
# busy worker scanned the objects of the requests in flight every few requests.
GC_YOUNG_THRESHOLD = 10_000


def compiled_modules() -> list:
    """The gateway's modules running as C extensions (built by Cython, gateway/setup.py), by name."""
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    return sorted(name.rpartition(".")[2] for name, module in list(sys.modules.items())
                  if name.startswith(__package__ + ".") and (getattr(module, "__file__", None) or "").endswith(suffixes))


def tls_context(config):
    """The server TLS context for --tls-cert-file/--tls-key-file, or None for plain HTTP.

    Raises OSError or ssl.SSLError when the files cannot be read or do not belong together."""
    if not config.tls_cert_file:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])  # the gateway speaks HTTP/1.1 only
    context.load_cert_chain(config.tls_cert_file, config.tls_key_file)
    return context


async def serve(config, connection, worker: int = 0, started=None, stop=None):
    """Run one gateway until SIGTERM/SIGINT (or until ``stop`` is set, when given).

    ``started`` (an asyncio.Event) is set once listening, with the gateway as ``started.gateway``
    and the bound addresses as ``started.addresses`` and ``started.metrics_addresses``.
    """
    metrics = GatewayMetrics()
    cache = SandboxCache(config.sandbox_id_label)
    watcher = PodWatcher(connection, cache, config.namespace, config.label_selector, metrics,
                         config.watch_timeout, config.watch_backoff_initial, config.watch_backoff_max)
    gateway = Gateway(config, cache, metrics)
    metrics.cache_sandboxes.read = lambda: len(cache)
    await gateway.start(connection)
    watcher.start()

    loop = asyncio.get_running_loop()
    # WebSocket upgrades only: http1.ClientConnection hands them over with their connection.
    websocket_server = web.Server(gateway.handle_websocket, handler_cancellation=True, access_log=None,
                                  keepalive_timeout=config.client_idle_timeout,
                                  max_line_size=config.max_header_size, max_field_size=config.max_header_size,
                                  max_headers=config.max_headers)
    connections = ClientConnections()
    reuse = config.reuse_port or config.workers > 1
    listener = await loop.create_server(lambda: ClientConnection(gateway, connections, websocket_server),
                                        config.listen_host, config.port, reuse_port=reuse or None, backlog=1024,
                                        ssl=tls_context(config))
    addresses = [sock.getsockname() for sock in listener.sockets]
    metrics_runner = web.AppRunner(metrics_app(metrics), access_log=None)
    await metrics_runner.setup()
    await web.TCPSite(metrics_runner, config.metrics_host, config.metrics_port + worker if config.metrics_port
                      else 0).start()

    if stop is None:
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
    log.info("liteboxd-gateway %s listening", __version__, extra={"fields": {
        "version": __version__, "worker": worker, "pid": os.getpid(),
        "event_loop": f"{type(loop).__module__}.{type(loop).__qualname__}", "access_log": config.access_log,
        "compiled": compiled_modules(), "tls": bool(config.tls_cert_file), "addresses": [
            list(address) for address in addresses], "metrics": [list(a) for a in metrics_runner.addresses],
        "namespace": config.namespace, "profile": config.profile, "label_selector": config.label_selector,
        "path_prefix": config.path_prefix, "sandbox_id_label": config.sandbox_id_label, "domain": config.domain,
        "allowed_ports": str(config.allowed_ports)}})
    if started is not None:
        started.gateway, started.watcher = gateway, watcher
        started.addresses, started.metrics_addresses = addresses, metrics_runner.addresses
        started.set()
    await stop.wait()

    log.info("draining", extra={"fields": {"worker": worker, "drain_delay": config.drain_delay}})
    gateway.begin_drain()
    await asyncio.sleep(config.drain_delay)
    listener.close()
    await connections.shutdown(config.shutdown_timeout)
    await websocket_server.shutdown(config.shutdown_timeout)
    await watcher.close()
    await gateway.close()
    await metrics_runner.cleanup()
    log.info("stopped", extra={"fields": {"worker": worker}})


def run_worker(config, connection, worker: int = 0) -> int:
    """Run one worker to its end; returns its exit code (1 when it failed, the error logged)."""
    # Each process sets up its own log writer thread (threads do not survive fork).
    writer = logs.setup(config.log_level)
    # What startup made (imported modules, configuration) lives as long as the process: kept out of
    # every collection from now on.
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    try:
        if config.event_loop == "uvloop":
            import uvloop

            uvloop.run(serve(config, connection, worker))
        else:
            asyncio.run(serve(config, connection, worker))
        return 0
    except Exception:
        # Logged while the writer still runs: after it stops, nothing would reach the log.
        log.exception("worker %d failed", worker)
        return 1
    finally:
        # A forked worker leaves with os._exit, past atexit: write out the last lines first.
        writer.stop()


def _die_with(parent: int):
    """Have the kernel send this worker SIGTERM (a graceful drain) when the supervisor dies, even by
    SIGKILL, which gives it no chance to stop its workers."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the supervisor was already gone
        os._exit(1)


def _supervise(config, connection) -> int:
    """Fork the workers and pass SIGTERM/SIGINT on. When one worker fails, the others are stopped
    and the gateway exits with its code, so the service manager sees it and restarts the whole."""
    children = set()
    supervisor = os.getpid()
    for worker in range(config.workers):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                _die_with(supervisor)
                code = run_worker(config, connection, worker)
            finally:  # the child must never return into the parent's code
                logging.shutdown()
                os._exit(code)
        children.add(pid)

    def forward(signum, _frame=None):
        for child in children:
            try:
                os.kill(child, signum)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    while children:
        pid, code = os.wait()
        children.discard(pid)
        code = os.waitstatus_to_exitcode(code)
        if code < 0:  # killed by a signal: report it as a shell would
            code = 128 - code
        if code and not status:
            status = code
            forward(signal.SIGTERM)
    return status


def main(argv=None) -> int:
    try:
        config = config_module.load(argv)
    except config_module.ConfigError as exc:
        print(f"liteboxd-gateway: {exc}", file=sys.stderr)
        return 2
    try:
        tls_context(config)  # read once here, so a bad file stops the gateway before any worker starts
    except (OSError, ssl.SSLError) as exc:
        print(f"liteboxd-gateway: --tls-cert-file {config.tls_cert_file} / --tls-key-file {config.tls_key_file}: "
              f"cannot serve TLS with them: {exc}", file=sys.stderr)
        return 2
    try:
        connection = kube.load(config.kubeconfig, config.kube_context)
    except (kube.KubeConfigError, OSError) as exc:
        print(f"liteboxd-gateway: cannot use the Kubernetes connection settings: {exc}", file=sys.stderr)
        return 2
    if config.workers > 1:
        return _supervise(config, connection)
    return run_worker(config, connection)


if __name__ == "__main__":
    sys.exit(main())
