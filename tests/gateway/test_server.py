"""The gateway as a process: start-up, configuration, workers, and graceful drain on SIGTERM."""
import asyncio
import json
import os
import pathlib
import signal
import socket
import sys

import aiohttp
import pytest
import yaml

from liteboxd_gateway import kube
from tests.gateway.conftest import GATEWAY_SRC
from tests.lib.apiserver import free_port


async def start_gateway(tmp_path, *args, env=None):
    log = open(tmp_path / "gateway.log", "wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "liteboxd_gateway", *args, stdout=log, stderr=log,
        env={**os.environ, "PYTHONPATH": str(GATEWAY_SRC), **(env or {})})
    log.close()
    return process


async def wait_ready(http, url, process, log_path):
    for _unused in range(600):
        if process.returncode is not None:
            raise AssertionError(f"gateway exited: {log_path.read_text()}")
        try:
            async with http.get(url + "/readyz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"gateway never ready: {log_path.read_text()}")


def log_lines(tmp_path):
    return [json.loads(line) for line in (tmp_path / "gateway.log").read_text().splitlines() if line.startswith("{")]


async def test_sigterm_drains_readiness_then_finishes_in_flight_requests(
        tmp_path, kube_apiserver, kube_namespace, sandbox_factory, http):
    sandbox = await sandbox_factory()
    port, metrics_port = free_port(), free_port()
    process = await start_gateway(
        tmp_path, "--listen-host", "127.0.0.1", "--port", str(port), "--metrics-host", "127.0.0.1",
        "--metrics-port", str(metrics_port), "--drain-delay", "2", "--shutdown-timeout", "20",
        "--event-loop", "uvloop",
        env={"LITEBOXD_GATEWAY_KUBECONFIG": kube_apiserver.kubeconfig, "LITEBOXD_GATEWAY_NAMESPACE": kube_namespace})
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(http, url, process, tmp_path / "gateway.log")
        started = log_lines(tmp_path)
        assert any(e.get("version") and e.get("namespace") == kube_namespace for e in started)
        slow = asyncio.create_task(http.get(url + sandbox.path("/slow?seconds=3"),
                                            headers={"X-Access-Token": sandbox.token}))
        while not sandbox.upstream.seen:
            await asyncio.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        statuses = set()
        while True:
            try:
                async with http.get(url + "/readyz") as response:
                    statuses.add(response.status)
                    if response.status == 503:
                        assert (await response.text()) == "draining\n"
                        break
            except aiohttp.ClientConnectionError:
                break
            await asyncio.sleep(0.02)
        assert 503 in statuses
        response = await slow
        assert (response.status, await response.text()) == (200, "slow done")
        assert await asyncio.wait_for(process.wait(), 60) == 0
        messages = [e["message"] for e in log_lines(tmp_path)]
        assert "draining" in messages and messages[-1] == "stopped"
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_workers_share_the_port_both_serve_and_both_drain_on_sigterm(
        tmp_path, kube_apiserver, kube_namespace, sandbox_factory, http):
    sandbox = await sandbox_factory()
    port = free_port()
    # Metrics port 0: each worker takes a free port and logs it (port+N could be taken by a
    # client socket of another process on a busy machine).
    process = await start_gateway(
        tmp_path, "--listen-host", "127.0.0.1", "--port", str(port), "--metrics-host", "127.0.0.1",
        "--metrics-port", "0", "--workers", "2", "--drain-delay", "1", "--shutdown-timeout", "20",
        "--kubeconfig", kube_apiserver.kubeconfig, "--namespace", kube_namespace)
    url = f"http://127.0.0.1:{port}"
    token = {"X-Access-Token": sandbox.token}

    def listening():
        return {e["worker"]: e for e in log_lines(tmp_path) if e.get("message", "").endswith("listening")}

    async def worker_metrics(worker):
        host, metrics_port = listening()[worker]["metrics"][0][:2]
        async with http.get(f"http://{host}:{metrics_port}/metrics") as response:
            return await response.text()

    try:
        await wait_ready(http, url, process, tmp_path / "gateway.log")
        for _unused in range(600):
            if len(listening()) == 2 or process.returncode is not None:
                break
            await asyncio.sleep(0.05)
        assert sorted(listening()) == [0, 1], (tmp_path / "gateway.log").read_text()
        for worker in range(2):
            for _unused in range(600):
                if "liteboxd_gateway_cache_synced 1" in await worker_metrics(worker):
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(f"worker {worker} never synced")
        # New connections, spread by the kernel: with 40 of them, both workers answer some
        # (all on one worker would happen once in 2^39 runs).
        for _unused in range(40):
            async with aiohttp.ClientSession() as fresh:
                async with fresh.get(url + sandbox.path("/"), headers=token) as response:
                    assert response.status == 200
        for worker in range(2):
            assert 'liteboxd_gateway_requests_total{form="path",code="200"}' in await worker_metrics(worker), worker
        assert len({e["pid"] for e in listening().values()}) == 2

        # Drain: a request in flight on each worker's connection finishes after SIGTERM.
        sessions = [aiohttp.ClientSession() for _unused in range(6)]
        try:
            requests = [asyncio.create_task(session.get(url + sandbox.path("/slow?seconds=2"), headers=token))
                        for session in sessions]
            while len(sandbox.upstream.seen) < 40 + len(sessions):
                await asyncio.sleep(0.02)
            process.send_signal(signal.SIGTERM)
            for response in await asyncio.gather(*requests):
                assert (response.status, await response.text()) == (200, "slow done")
        finally:
            for session in sessions:
                await session.close()
        assert await asyncio.wait_for(process.wait(), 60) == 0
        entries = log_lines(tmp_path)
        for message in ("draining", "stopped"):
            assert sorted(e["worker"] for e in entries if e.get("message") == message) == [0, 1], message
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_bad_settings_stop_start_up_with_the_flag_named(tmp_path):
    for args, env, flag in ((["--allowed-ports", "80-20"], {}, "--allowed-ports"),
                            ([], {"LITEBOXD_GATEWAY_PORT": "http"}, "--port"),
                            (["--domain", "Bad_Domain"], {}, "--domain")):
        process = await start_gateway(tmp_path, *args, env=env)
        assert await asyncio.wait_for(process.wait(), 60) == 2
        assert flag in (tmp_path / "gateway.log").read_text()


@pytest.mark.parametrize("credentials", [
    {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "aws-iam-authenticator"}},
    {"auth-provider": {"name": "oidc", "config": {"client-id": "gateway"}}},
], ids=["exec", "auth-provider"])
async def test_a_kubeconfig_user_the_gateway_cannot_authenticate_stops_start_up(
        tmp_path, kube_apiserver, credentials):
    document = yaml.safe_load(pathlib.Path(kube_apiserver.kubeconfig).read_text())
    document["users"] = [{"name": "platform-sso", "user": credentials}]
    document["contexts"][0]["context"]["user"] = "platform-sso"
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(document))
    field = next(iter(credentials))
    with pytest.raises(kube.KubeConfigError, match=f"user 'platform-sso' authenticates with '{field}'"):
        kube.load(str(kubeconfig))
    # As a process: refused before it listens, with the user named.
    port = free_port()
    process = await start_gateway(tmp_path, "--kubeconfig", str(kubeconfig), "--port", str(port))
    assert await asyncio.wait_for(process.wait(), 60) == 2
    log = (tmp_path / "gateway.log").read_text()
    assert f"user 'platform-sso' authenticates with '{field}'" in log and "listening" not in log


async def test_version_flag(tmp_path):
    from liteboxd_gateway import __version__

    process = await start_gateway(tmp_path, "--version")
    assert await asyncio.wait_for(process.wait(), 60) == 0
    assert (tmp_path / "gateway.log").read_text().strip() == __version__


def port_below_a_taken_one():
    """A listening socket on port P+1 and the free port P."""
    while True:
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        below = taken.getsockname()[1] - 1
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", below))
                return taken, below
            except OSError:
                taken.close()


async def test_a_worker_that_cannot_start_stops_the_gateway_with_its_error_logged(
        tmp_path, kube_apiserver, kube_namespace):
    # Worker 1's metrics port (metrics-port + 1) is taken: the gateway must not run on half its
    # workers without a word; it logs the failure and exits non-zero so the service manager acts.
    taken, metrics_port = port_below_a_taken_one()
    try:
        process = await start_gateway(
            tmp_path, "--listen-host", "127.0.0.1", "--port", str(free_port()), "--metrics-host", "127.0.0.1",
            "--metrics-port", str(metrics_port), "--workers", "2", "--drain-delay", "0",
            "--kubeconfig", kube_apiserver.kubeconfig, "--namespace", kube_namespace)
        try:
            assert await asyncio.wait_for(process.wait(), 60) == 1
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    finally:
        taken.close()
    failures = [e for e in log_lines(tmp_path) if e.get("message") == "worker 1 failed"]
    assert failures and "address already in use" in failures[0].get("error", "").lower(), \
        (tmp_path / "gateway.log").read_text()


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_workers_stop_when_the_supervisor_is_killed(tmp_path, kube_apiserver, kube_namespace, http):
    # SIGKILL leaves the supervisor no chance to stop its workers: the kernel must (parent-death signal).
    port = free_port()
    process = await start_gateway(
        tmp_path, "--listen-host", "127.0.0.1", "--port", str(port), "--metrics-host", "127.0.0.1",
        "--metrics-port", "0", "--workers", "2", "--drain-delay", "0",
        "--kubeconfig", kube_apiserver.kubeconfig, "--namespace", kube_namespace)
    workers = []
    try:
        await wait_ready(http, f"http://127.0.0.1:{port}", process, tmp_path / "gateway.log")
        for _unused in range(600):
            workers = [e["pid"] for e in log_lines(tmp_path) if e.get("message", "").endswith("listening")]
            if len(workers) == 2:
                break
            await asyncio.sleep(0.05)
        assert len(workers) == 2, (tmp_path / "gateway.log").read_text()
    finally:
        process.kill()
        await process.wait()
    for _unused in range(600):
        if not any(running(pid) for pid in workers):
            break
        await asyncio.sleep(0.05)
    left = [pid for pid in workers if running(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"workers outlived their supervisor: {left}"
