"""Building the gateway: compiled modules where a C compiler is, plain Python elsewhere; the
wheelhouse scripts/build-gateway.sh makes for the hosts, installed as the role installs it."""
import hashlib
import importlib
import os
import pathlib
import re
import subprocess
import sys
import tomllib

import pytest
from packaging import tags
from packaging.utils import parse_wheel_filename

from liteboxd_gateway.server import compiled_modules
from tests.lib.gateway_build import GATEWAY_PROJECT, build_gateway

# What gateway/setup.py compiles: modules with a Python twin, and wsfast (C only, imported by wsrelay
# where it was built).
TWINNED = ["app", "http1", "proxy", "writes", "wsrelay"]
COMPILED = sorted(TWINNED + ["wsfast"])


def test_the_package_under_test_runs_compiled_exactly_when_its_build_says_so():
    # scripts/test runs the gateway tests on the sources (LITEBOXD_GATEWAY_BUILD unset) and again
    # on a build of them (compiled): each pass must really test what it says it does.
    for name in TWINNED:
        importlib.import_module(f"liteboxd_gateway.{name}")
    expected = COMPILED if os.environ.get("LITEBOXD_GATEWAY_BUILD") == "compiled" else []
    assert compiled_modules() == expected


# -- the wheelhouse for the hosts (scripts/build-gateway.sh) ------------------------------------
# Debian 12's interpreter: what the lab hosts run, and what the wheelhouse is built for.
DEBIAN_PYTHON = "/usr/bin/python3.11"
HOST_TAGS = set(tags.cpython_tags((3, 11), abis=["cp311"], platforms=[
    *(f"manylinux_2_{minor}_x86_64" for minor in range(5, 37)), "manylinux2014_x86_64", "manylinux2010_x86_64",
    "manylinux1_x86_64", "linux_x86_64"])) | set(tags.compatible_tags((3, 11), platforms=["linux_x86_64"]))
# Prints the interpreter's version, the installed gateway wheel's tags and its compiled modules.
PROBE = ("import importlib.metadata, sys;" + "".join(f"import liteboxd_gateway.{name};" for name in TWINNED)
         + "from liteboxd_gateway.server import compiled_modules;"
         "wheel = importlib.metadata.distribution('liteboxd-gateway').read_text('WHEEL');"
         "print(sys.version.split()[0]);"
         "print(' '.join(line.split()[1] for line in wheel.splitlines() if line.startswith('Tag:')));"
         "print(' '.join(compiled_modules()))")


def requirements(wheelhouse: pathlib.Path) -> dict:
    """requirements.txt of a wheelhouse: {name: (version, [sha256, ...])}."""
    pins = {}
    for line in (wheelhouse / "requirements.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            pin, *hashes = line.split()
            name, version = pin.split("==")
            pins[name] = (version, [h.removeprefix("--hash=sha256:") for h in hashes])
    return pins


def host_install(tmp_path, wheelhouse) -> list:
    """What the role does on a host: a virtualenv of Debian's python3.11, pip offline with hashes
    checked; returns what PROBE printed there."""
    venv = tmp_path / "venv"
    # A host has no PYTHONPATH; env.sh's would show pip a checkout's egg-info as the gateway installed.
    host_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([DEBIAN_PYTHON, "-m", "venv", str(venv)], check=True, timeout=120)
    installed = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--no-index", "--no-cache-dir", "--disable-pip-version-check",
         "--find-links", str(wheelhouse), "--require-hashes", "--requirement", str(wheelhouse / "requirements.txt")],
        capture_output=True, text=True, check=False, timeout=300, env=host_env)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    version = subprocess.run([str(venv / "bin" / "liteboxd-gateway"), "--version"], capture_output=True, text=True,
                             check=False, timeout=60)
    assert version.returncode == 0 and version.stdout.strip(), version.stderr
    probe = subprocess.run([str(venv / "bin" / "python"), "-c", PROBE], capture_output=True, text=True, check=False,
                           timeout=60, env=host_env)
    assert probe.returncode == 0, probe.stderr
    return probe.stdout.splitlines()


@pytest.fixture(scope="session")
def wheelhouse() -> pathlib.Path:
    return pathlib.Path(build_gateway()["wheelhouse"])


def test_the_wheelhouse_pins_every_wheel_by_hash_for_the_hosts_python(wheelhouse):
    pins = requirements(wheelhouse)
    wheels = sorted(wheelhouse.glob("*.whl"))
    # Every wheel is pinned with its own hash, and every hash is a wheel of the wheelhouse.
    listed = {digest for _version, digests in pins.values() for digest in digests}
    assert listed == {hashlib.sha256(wheel.read_bytes()).hexdigest() for wheel in wheels}
    for wheel in wheels:
        name, version, _build, wheel_tags = parse_wheel_filename(wheel.name)
        assert pins[wheel.name.split("-")[0]][0] == str(version), wheel.name
        assert wheel_tags & HOST_TAGS, f"{wheel.name} does not install on CPython 3.11, glibc 2.36, x86_64"
    # The versions are the project's pins: pyproject.toml's and constraints.txt's.
    project = tomllib.loads((GATEWAY_PROJECT / "pyproject.toml").read_text())
    constraints = [line for line in (GATEWAY_PROJECT / "constraints.txt").read_text().splitlines()
                   if line and not line.startswith("#")]
    for pin in project["project"]["dependencies"] + constraints:
        name, version = pin.split("==")
        assert pins[re.sub(r"[-_.]+", "_", name).lower()][0] == version, pin
    # The gateway twice: compiled for CPython 3.11, and pure Python for any other.
    gateway = {str(next(iter(parse_wheel_filename(w.name)[3]))): w for w in wheels if w.name.startswith("liteboxd_gateway-")}
    assert sorted(gateway) == ["cp311-cp311-linux_x86_64", "py3-none-any"]
    contents = subprocess.run([sys.executable, "-m", "zipfile", "-l", str(gateway["cp311-cp311-linux_x86_64"])],
                              capture_output=True, text=True, check=True).stdout
    assert sorted(re.findall(r"liteboxd_gateway/(\w+)\.cpython-311-x86_64-linux-gnu\.so", contents)) == COMPILED


def test_debians_python_installs_the_wheelhouse_offline_and_runs_the_compiled_modules(tmp_path, wheelhouse):
    version, wheel_tags, compiled = host_install(tmp_path, wheelhouse)
    assert version.startswith("3.11.") and wheel_tags == "cp311-cp311-linux_x86_64"
    assert compiled.split() == COMPILED


def test_built_without_a_c_compiler_the_wheelhouse_runs_as_plain_python(tmp_path):
    built = build_gateway(env={"CC": "false", "LITEBOXD_GATEWAY_DIST": str(tmp_path / "dist")})
    wheelhouse = pathlib.Path(built["wheelhouse"])
    assert [w.name for w in wheelhouse.glob("liteboxd_gateway-*")] == [
        f"liteboxd_gateway-{requirements(wheelhouse)['liteboxd_gateway'][0]}-py3-none-any.whl"]
    assert (tmp_path / "dist" / "wheelhouse").resolve() == wheelhouse
    _version, wheel_tags, compiled = host_install(tmp_path, wheelhouse)
    assert wheel_tags == "py3-none-any" and compiled == ""
