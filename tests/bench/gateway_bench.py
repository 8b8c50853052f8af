"""Gateway benchmark: direct vs liteboxd-gateway vs nginx, WebSocket round trips, cache scale, churn.

A script, not a test: it prints tables. Everything runs on 127.0.0.1 on this machine:
- upstream: nginx (one worker) serving 1 KiB and 64 KiB files, and an aiohttp WebSocket echo server;
- proxies: liteboxd-gateway (one process unless --workers, uvloop) fed by a real kube-apiserver,
  and nginx (worker_processes 1) as the equivalent reverse proxy: upstream keep-alive, the same
  path route (prefix stripped), the token header checked (401 otherwise), a request id sent up and
  back, X-Forwarded-For/Proto/Host set, and with ``--access-log on`` (the default) both write a
  JSON access line per request (nginx buffered, flushed within 100 ms, like the gateway's writer);
  the default run compares one process with one process;
- load: wrk (one thread, keep-alive) at several concurrencies; WebSocket round trips from aiohttp;
- the gateway runs as the role installs it where a C compiler is: built by pip, its hot modules
  compiled by Cython (``--build python`` runs the sources as they are, no module compiled).

    bash -c 'source scripts/env.sh && python tests/bench/gateway_bench.py [--duration 3] [--workers 2]'
"""
import argparse
import asyncio
import gc
import json
import os
import pathlib
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "gateway" / "src"))

from tests.lib.apiserver import KubeAPIServer, kube_assets  # noqa: E402
from tests.lib.gateway_build import pip_install_gateway  # noqa: E402

TOKEN = "bench-token-0123456789abcdef"
PARTS = ("http", "websocket", "churn", "cache")
NGINX_UPSTREAM = """
worker_processes 1;
daemon off;
pid {dir}/upstream.pid;
error_log {dir}/upstream-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {dir}/ub; proxy_temp_path {dir}/up; fastcgi_temp_path {dir}/uf;
  uwsgi_temp_path {dir}/uu; scgi_temp_path {dir}/us;
  keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{port}; root {dir}/www; }}
}}
"""
NGINX_PROXY = """
worker_processes 1;
daemon off;
pid {dir}/proxy.pid;
error_log {dir}/proxy-error.log warn;
events {{ worker_connections 4096; }}
http {{
  client_body_temp_path {dir}/pb; proxy_temp_path {dir}/pp; fastcgi_temp_path {dir}/pf;
  uwsgi_temp_path {dir}/pu; scgi_temp_path {dir}/ps;
  keepalive_requests 1000000;
  log_format json escape=json '{{"time":"$time_iso8601","request_id":"$request_id","remote":"$remote_addr",'
    '"method":"$request_method","target":"$request_uri","status":$status,"duration_ms":$request_time,'
    '"bytes":$body_bytes_sent}}';
  {access_log}
  upstream app {{ server 127.0.0.1:{upstream}; keepalive 256; }}
  upstream ws {{ server 127.0.0.1:{ws}; }}
  map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
  server {{
    listen 127.0.0.1:{port};
    location /sandbox/bench/port/{ws}/ws {{
      if ($http_x_access_token != "{token}") {{ return 401; }}
      proxy_pass http://ws/ws; proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection $connection_upgrade;
      proxy_set_header X-Access-Token ""; proxy_set_header X-Request-Id $request_id;
      proxy_set_header X-Forwarded-For $remote_addr; proxy_read_timeout 600s;
    }}
    location /sandbox/bench/port/{upstream}/ {{
      if ($http_x_access_token != "{token}") {{ return 401; }}
      proxy_pass http://app/; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header X-Access-Token ""; proxy_set_header X-Request-Id $request_id;
      proxy_set_header X-Forwarded-For $remote_addr; proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $host; add_header X-Request-Id $request_id always;
      proxy_buffering off;
    }}
  }}
}}
"""
WS_ECHO = """
import sys
from aiohttp import web
async def ws(request):
    sock = web.WebSocketResponse(compress=False)
    await sock.prepare(request)
    async for message in sock:
        await (sock.send_str(message.data) if message.type == 1 else sock.send_bytes(message.data))
    return sock
app = web.Application(); app.router.add_get("/ws", ws)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


class Proc:
    """CPU seconds and peak RSS of a process and its children (gateway workers) from /proc."""

    def __init__(self, pid):
        self.pid = pid

    def pids(self):
        children = pathlib.Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        return [self.pid] + [int(child) for child in children]

    def cpu(self):
        total = 0.0
        for pid in self.pids():
            fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def rss_mib(self, key="VmRSS"):
        total = 0.0
        for pid in self.pids():
            for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    total += int(line.split()[1]) / 1024
        return total


def nginx_worker(master_pid):
    children = pathlib.Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    return Proc(int(children[0]))


def parse_wrk(text):
    def seconds(value):
        number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()
        return float(number) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    p50 = seconds(re.search(r"\s50%\s+(\S+)", text).group(1))
    p99 = seconds(re.search(r"\s99%\s+(\S+)", text).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    socket_errors = re.search(r"Socket errors: (.*)", text)
    return rps, p50, p99, (int(errors.group(1)) if errors else 0), (socket_errors.group(1) if socket_errors else "")


def run_wrk(url, concurrency, duration, headers=()):
    argv = ["wrk", "-t", "1", "-c", str(concurrency), "-d", f"{duration}s", "--latency", "--timeout", "10s"]
    for header in headers:
        argv += ["-H", header]
    out = subprocess.run(argv + [url], capture_output=True, text=True, timeout=duration + 60, check=True)
    return parse_wrk(out.stdout)


async def ws_round_trips(url, count, headers=None, size=64):
    import aiohttp

    payload = "x" * size
    samples = []
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url, headers=headers or {}) as ws:
            for _unused in range(50):
                await ws.send_str(payload)
                await ws.receive()
            started = time.perf_counter()
            for _unused in range(count):
                t0 = time.perf_counter()
                await ws.send_str(payload)
                await ws.receive()
                samples.append(time.perf_counter() - t0)
            elapsed = time.perf_counter() - started
    samples.sort()
    return count / elapsed, samples[len(samples) // 2], samples[int(len(samples) * 0.99)]


def bench_websocket(targets, round_trips, rounds):
    """Sequential round trips per target, the targets alternating in each round; prints each round,
    then the gateway's msg/s against nginx's: per round, median and range."""
    print(f"\nWebSocket echo, {round_trips} sequential round trips of 64-byte text messages per target and round"
          f"\n(us/rt = the proxy's CPU microseconds per round trip, user + system)")
    print(f"{'round':>5} {'target':>8} {'msg/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'us/rt':>6}")
    ratios = []
    for round_number in range(1, rounds + 1):
        rates = {}
        for name, (url, headers, proc) in targets.items():
            cpu0 = proc.cpu() if proc else 0.0
            rate, p50, p99 = asyncio.run(ws_round_trips(url, round_trips, headers))
            per_round_trip = f"{(proc.cpu() - cpu0) / round_trips * 1e6:>6.1f}" if proc else f"{'':>6}"
            rates[name] = rate
            print(f"{round_number:>5} {name:>8} {rate:>8.0f} {p50 * 1e3:>8.3f} {p99 * 1e3:>8.3f} {per_round_trip}")
        ratios.append(rates["gateway"] / rates["nginx"])
        print(f"{round_number:>5} {'gw/nginx':>8} {ratios[-1]:>8.2f}   load average {os.getloadavg()[0]:.1f}")
    ordered = sorted(ratios)
    print(f"WebSocket msg/s gateway/nginx: median {ordered[len(ordered) // 2]:.2f}, range {ordered[0]:.2f}-{ordered[-1]:.2f}"
          f" over {rounds} round(s)")


def bench_http(targets, sizes, concurrencies, duration):
    """One wrk run per size, concurrency and target: {(size, concurrency, target): measurements}."""
    results = {}
    for size in sizes:
        for concurrency in concurrencies:
            for name, (base, headers, proc) in targets.items():
                cpu0 = proc.cpu() if proc else 0.0
                rps, p50, p99, non2xx, socket_errors = run_wrk(base + size, concurrency, duration, headers)
                cpu = (proc.cpu() - cpu0) / duration if proc else 0.0
                rss = proc.rss_mib("VmHWM") if proc else 0.0
                results[(size, concurrency, name)] = (rps, p50, p99, cpu, rss, non2xx, socket_errors)
    return results


def print_http(results, targets, sizes, concurrencies, title):
    print(f"\n{title}")
    header = (f"{'size':>4} {'conc':>4} {'target':>8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'cpu':>5}"
              f" {'us/req':>6} {'peakMiB':>7} {'errors':>6}")
    print(header)
    print("-" * len(header))
    for size in sizes:
        for concurrency in concurrencies:
            for name in targets:
                rps, p50, p99, cpu, rss, non2xx, socket_errors = results[(size, concurrency, name)]
                per_request = f"{cpu / rps * 1e6:>6.1f}" if cpu else f"{'':>6}"
                print(f"{size:>4} {concurrency:>4} {name:>8} {rps:>9.0f} {p50 * 1e3:>8.3f} {p99 * 1e3:>8.3f}"
                      f" {cpu:>5.2f} {per_request} {rss:>7.1f} {non2xx:>6} {socket_errors}")
    print(f"{'size':>4} {'conc':>4} {'gw/direct rps':>13} {'gw/nginx rps':>12} {'gw added p50 ms':>15}"
          f" {'nginx added p50 ms':>18}")
    for size in sizes:
        for concurrency in concurrencies:
            direct, gw, ng = (results[(size, concurrency, n)] for n in ("direct", "gateway", "nginx"))
            print(f"{size:>4} {concurrency:>4} {gw[0] / direct[0]:>13.2f} {gw[0] / ng[0]:>12.2f}"
                  f" {(gw[1] - direct[1]) * 1e3:>15.3f} {(ng[1] - direct[1]) * 1e3:>18.3f}")


def bench_cache(sizes):
    from liteboxd_gateway.cache import SandboxCache

    rows = []
    for size in sizes:
        events = [json.dumps({"type": "ADDED", "object": {
            "metadata": {"name": f"sandbox-{i:06d}-{random.getrandbits(32):08x}", "resourceVersion": str(i),
                         "labels": {"liteboxd.io/sandbox": "true"},
                         "annotations": {"liteboxd.io/access-token-sha256": os.urandom(32).hex()}},
            "status": {"phase": "Running", "podIP": f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}",
                       "conditions": [{"type": "Ready", "status": "True"}]}}}).encode() for i in range(size)]
        gc.collect()
        tracemalloc.start()
        cache = SandboxCache()
        started = time.perf_counter()
        for line in events:
            event = json.loads(line)
            cache.apply(event["type"], event["object"])
        apply_seconds = time.perf_counter() - started
        memory, _unused = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        names = [json.loads(events[random.randrange(size)])["object"]["metadata"]["name"]
                 for _unused in range(1000)]
        lookups = names * 200
        started = time.perf_counter()
        for name in lookups:
            cache.get(name)
        lookup_ns = (time.perf_counter() - started) / len(lookups) * 1e9
        rows.append((size, memory / size, memory / 2 ** 20, apply_seconds / size * 1e6, lookup_ns))
        del cache, events
    return rows


def churn(kube, namespace, names, rate, stop):
    """Patch Pods at `rate` events per second until stopped (each patch is one watch event)."""
    from kubernetes import client

    core = client.CoreV1Api(kube.api_client())
    interval, next_at, done = 1.0 / rate, time.monotonic(), 0
    while not stop.is_set():
        name = names[done % len(names)]
        core.patch_namespaced_pod(name, namespace, {"metadata": {"annotations": {"bench/churn": str(done)}}})
        done += 1
        next_at += interval
        time.sleep(max(0.0, next_at - time.monotonic()))
    stop.count = done


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    parser.add_argument("--concurrency", default="1,10,50,200")
    parser.add_argument("--sizes", default="1k,64k")
    parser.add_argument("--ws-round-trips", type=int, default=10000)
    parser.add_argument("--ws-rounds", type=int, default=3,
                        help="repeat the WebSocket table, the targets alternating within each round")
    parser.add_argument("--cache-sizes", default="10000,100000")
    parser.add_argument("--churn-rate", type=float, default=100)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--access-log", choices=("on", "off"), default="on",
                        help="a JSON access line per request from both proxies, or from neither")
    parser.add_argument("--build", choices=("compiled", "python"), default="compiled",
                        help="the gateway built with its compiled modules (as installed), or its plain sources")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the HTTP table, each round printed on its own")
    parser.add_argument("--gateway-arg", action="append", default=[],
                        help="extra gateway flag, e.g. --gateway-arg=--upstream-idle-timeout=30 (repeatable)")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"which tables to measure, a subset of {','.join(PARTS)} (a quick iteration: --parts http"
                             " --sizes 1k --concurrency 1,50)")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    if not parts <= set(PARTS):
        parser.error(f"--parts: choose among {','.join(PARTS)}")
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    sizes = args.sizes.split(",")

    scratch = pathlib.Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    scratch.chmod(0o755)  # nginx workers run unprivileged and must read the files
    (scratch / "www").mkdir()
    (scratch / "www" / "1k").write_bytes(os.urandom(1024))
    (scratch / "www" / "64k").write_bytes(os.urandom(65536))
    processes = []
    kube = None
    try:
        gateway_path = REPO / "gateway" / "src"
        if args.build == "compiled":
            gateway_path = scratch / "gateway-build"
            build = pip_install_gateway(gateway_path)
            if build.returncode:
                sys.exit(f"building the gateway failed:\n{build.stdout}{build.stderr}")
        upstream_port, ws_port, nginx_port, gateway_port = free_port(), free_port(), free_port(), free_port()
        (scratch / "upstream.conf").write_text(NGINX_UPSTREAM.format(dir=scratch, port=upstream_port))
        access_log = f"access_log {scratch}/proxy-access.log json buffer=64k flush=100ms;" \
            if args.access_log == "on" else "access_log off;"
        (scratch / "proxy.conf").write_text(NGINX_PROXY.format(dir=scratch, port=nginx_port, upstream=upstream_port,
                                                               token=TOKEN, access_log=access_log,
                                                               ws=ws_port))
        for conf in ("upstream.conf", "proxy.conf"):
            processes.append(subprocess.Popen(["nginx", "-p", str(scratch), "-c", str(scratch / conf)]))
        processes.append(subprocess.Popen([sys.executable, "-c", WS_ECHO, str(ws_port)]))
        for port in (upstream_port, ws_port, nginx_port):
            wait_port(port)
        nginx_proxy = nginx_worker(processes[1].pid)

        print("starting etcd + kube-apiserver ...", file=sys.stderr)
        kube = KubeAPIServer(scratch / "kube", kube_assets())
        (scratch / "kube").mkdir()
        kube.start()
        from kubernetes import client

        core = client.CoreV1Api(kube.api_client())
        namespace = "liteboxd-sandbox"
        core.create_namespace({"metadata": {"name": namespace}})
        pod_names = ["bench"] + [f"churn-{i}" for i in range(20)]
        for name in pod_names:
            core.create_namespaced_pod(namespace, {
                "metadata": {"name": name, "labels": {"liteboxd.io/sandbox": "true", "liteboxd.io/sandbox-id": name},
                             "annotations": {"liteboxd.io/access-token": TOKEN}},
                "spec": {"containers": [{"name": "main", "image": "bench:1"}]}})
            core.patch_namespaced_pod_status(name, namespace, {"status": {
                "phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
                "conditions": [{"type": "Ready", "status": "True"}]}})

        gateway_log = open(scratch / "gateway.log", "wb")
        gateway = subprocess.Popen(
            [sys.executable, "-m", "liteboxd_gateway", "--listen-host", "127.0.0.1", "--port", str(gateway_port),
             "--metrics-host", "127.0.0.1", "--metrics-port", str(free_port()), "--kubeconfig", kube.kubeconfig,
             "--namespace", namespace, "--drain-delay", "0", "--workers", str(args.workers),
             f"--access-log={'true' if args.access_log == 'on' else 'false'}", *args.gateway_arg],
            stdout=gateway_log, stderr=gateway_log, env={**os.environ, "PYTHONPATH": str(gateway_path)})
        processes.append(gateway)
        wait_port(gateway_port)
        gateway_proc = Proc(gateway.pid)
        while True:
            try:
                import urllib.request

                if urllib.request.urlopen(f"http://127.0.0.1:{gateway_port}/readyz", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(0.1)

        targets = {
            "direct": (f"http://127.0.0.1:{upstream_port}/", (), None),
            "gateway": (f"http://127.0.0.1:{gateway_port}/sandbox/bench/port/{upstream_port}/",
                        (f"X-Access-Token: {TOKEN}",), gateway_proc),
            "nginx": (f"http://127.0.0.1:{nginx_port}/sandbox/bench/port/{upstream_port}/", (f"X-Access-Token: {TOKEN}",),
                      nginx_proxy),
        }
        if "http" in parts:
            started = [json.loads(line) for line in (scratch / "gateway.log").read_text().splitlines()
                       if line.startswith("{") and "listening" in line]
            print(f"\nHTTP keep-alive, wrk -t1, {args.duration}s per cell; gateway: {len(started)} worker process(es),"
                  f" event loop {started[0]['event_loop']}, compiled modules:"
                  f" {', '.join(started[0]['compiled']) or 'none'}; access log: gateway"
                  f" {'on' if started[0]['access_log'] else 'off'}, nginx {args.access_log};"
                  f" nginx proxy and upstream: worker_processes 1 each"
                  f"\n(cpu = cores used by the proxy's processes, user + system; us/req = CPU microseconds per"
                  f" request; peak RSS = VmHWM)")
            for round_number in range(1, args.rounds + 1):
                results = bench_http(targets, sizes, concurrencies, args.duration)
                print_http(results, targets, sizes, concurrencies, f"round {round_number} of {args.rounds}, "
                           + time.strftime("%H:%M:%S UTC", time.gmtime()) + f", load average {os.getloadavg()[0]:.1f}")

        if "websocket" in parts:
            ws_targets = {
                "direct": (f"ws://127.0.0.1:{ws_port}/ws", None, None),
                "gateway": (f"ws://127.0.0.1:{gateway_port}/sandbox/bench/port/{ws_port}/ws",
                            {"X-Access-Token": TOKEN}, gateway_proc),
                "nginx": (f"ws://127.0.0.1:{nginx_port}/sandbox/bench/port/{ws_port}/ws", {"X-Access-Token": TOKEN},
                          nginx_proxy),
            }
            bench_websocket(ws_targets, args.ws_round_trips, args.ws_rounds)

        if "churn" in parts:
            print(f"\nGateway p99 while {len(pod_names) - 1} sandbox Pods churn at {args.churn_rate:.0f} events/s "
                  f"(real API server patches, the gateway's watch applies them), wrk c10 1k")
            quiet = run_wrk(targets["gateway"][0] + "1k", 10, args.duration, targets["gateway"][1])
            stop = threading.Event()
            worker = threading.Thread(target=churn, args=(kube, namespace, pod_names[1:], args.churn_rate, stop))
            worker.start()
            busy = run_wrk(targets["gateway"][0] + "1k", 10, args.duration, targets["gateway"][1])
            stop.set()
            worker.join()
            achieved = stop.count / args.duration
            print(f"{'':>10} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
            print(f"{'quiet':>10} {quiet[0]:>9.0f} {quiet[1] * 1e3:>8.3f} {quiet[2] * 1e3:>8.3f}")
            print(f"{'churning':>10} {busy[0]:>9.0f} {busy[1] * 1e3:>8.3f} {busy[2] * 1e3:>8.3f}"
                  f"   ({achieved:.0f} events/s reached)")
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM if process is not processes[0] else signal.SIGQUIT)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
        for process in processes[:2]:
            if process.poll() is None:
                process.kill()
        if kube is not None:
            kube.stop()

    if "cache" in parts:
        print("\nCache: synthetic watch events (JSON decoded and applied like the watch does), then lookups")
        print(f"{'pods':>7} {'bytes/pod':>9} {'MiB':>7} {'apply us/event':>14} {'lookup ns':>9}")
        for size, per_pod, total, apply_us, lookup_ns in bench_cache([int(s) for s in args.cache_sizes.split(",")]):
            print(f"{size:>7} {per_pod:>9.0f} {total:>7.1f} {apply_us:>14.2f} {lookup_ns:>9.1f}")
    shutil.rmtree(scratch, ignore_errors=True)
    print(f"\ncommand: {' '.join([os.path.basename(sys.executable)] + sys.argv)}")


if __name__ == "__main__":
    main()
