"""HTTPS on the gateway's own listener, and no plain HTTP on a non-loopback address unless told.

The certificates come from the same PKI helper as the API-server fixture (a CA and a serving
certificate for localhost / 127.0.0.1); the clients are aiohttp's, which verify the chain and the
name like any TLS client built on OpenSSL.
"""
import asyncio
import ssl
import sys

import aiohttp
import pytest

from liteboxd_gateway import config
from tests.gateway.conftest import GATEWAY_SRC, assert_echoes
from tests.lib.apiserver import write_pki


@pytest.fixture
def pki(tmp_path):
    write_pki(tmp_path)
    return tmp_path


def client_context(pki):
    return ssl.create_default_context(cafile=str(pki / "ca.crt"))


@pytest.mark.parametrize("argv", [[], ["--listen-host", "10.20.0.40"], ["--listen-host", "::"]])
def test_plain_http_on_a_non_loopback_address_is_refused(argv):
    with pytest.raises(config.ConfigError) as refused:
        config.load(argv)
    message = str(refused.value)
    assert "refusing to serve plain HTTP on a non-loopback address" in message
    assert "--tls-cert-file and --tls-key-file" in message and "--allow-plain-http" in message


@pytest.mark.parametrize("argv", [
    ["--listen-host", "127.0.0.1"], ["--listen-host", "::1"], ["--listen-host", "localhost"],
    ["--allow-plain-http"], ["--listen-host", "10.20.0.40", "--allow-plain-http", "true"],
    ["--tls-cert-file", "/etc/gw/tls.crt", "--tls-key-file", "/etc/gw/tls.key"],
])
def test_loopback_tls_or_an_explicit_choice_may_listen(argv):
    config.load(argv)


def test_the_choice_can_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("LITEBOXD_GATEWAY_ALLOW_PLAIN_HTTP", "true")
    assert config.load([]).allow_plain_http is True


def test_a_certificate_needs_its_key():
    with pytest.raises(config.ConfigError, match="--tls-cert-file and --tls-key-file: give both"):
        config.load(["--tls-cert-file", "/etc/gw/tls.crt"])


async def test_unreadable_certificate_files_stop_the_gateway_before_it_listens(tmp_path, pki):
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "liteboxd_gateway", "--tls-cert-file", str(pki / "server.crt"),
        "--tls-key-file", str(tmp_path / "missing.key"), stderr=asyncio.subprocess.PIPE,
        env={"PYTHONPATH": str(GATEWAY_SRC)})
    _unused, stderr = await process.communicate()
    assert process.returncode == 2
    assert b"cannot serve TLS with them" in stderr and b"missing.key" in stderr


async def test_https_and_wss_reach_the_sandbox_and_plain_http_does_not(pki, gateway_factory, sandbox_factory):
    gateway = await gateway_factory(tls_cert_file=str(pki / "server.crt"), tls_key_file=str(pki / "server.key"))
    sandbox = await sandbox_factory()
    url = f"https://localhost:{gateway.port}"
    connector = aiohttp.TCPConnector(ssl=client_context(pki))
    async with aiohttp.ClientSession(connector=connector) as https:
        async with https.get(url + "/readyz") as ready:
            assert ready.status == 200
        async with https.get(url + sandbox.path("/hello"), headers={"X-Access-Token": sandbox.token}) as answer:
            body = await answer.json()
        async with https.get(url + sandbox.path("/hello")) as refused:
            assert refused.status == 401
        async with https.ws_connect(f"wss://localhost:{gateway.port}" + sandbox.path("/ws"),
                                    headers={"X-Access-Token": sandbox.token}) as ws:
            await assert_echoes(ws)
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientError):
            async with http.get(f"http://127.0.0.1:{gateway.port}/readyz") as plain:
                await plain.read()

    assert answer.status == 200 and body["raw_path"] == "/hello"
    headers = dict((name.lower(), value) for name, value in body["headers"])
    assert headers["x-forwarded-proto"] == "https"
    assert "x-access-token" not in headers


async def test_a_client_that_does_not_trust_the_certificate_is_refused(pki, gateway_factory):
    gateway = await gateway_factory(tls_cert_file=str(pki / "server.crt"), tls_key_file=str(pki / "server.key"))
    async with aiohttp.ClientSession() as http:  # the system's trust store: the test CA is not in it
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            async with http.get(f"https://localhost:{gateway.port}/readyz"):
                pass
