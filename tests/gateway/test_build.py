"""Building the gateway package: compiled modules where a C compiler is, plain Python elsewhere."""
import importlib
import os
import shutil
import subprocess
import sys

import pytest

from liteboxd_gateway.server import compiled_modules
from tests.lib.gateway_build import GATEWAY_PROJECT, pip_install_gateway

# What gateway/setup.py compiles.
COMPILED = ["app", "http1", "proxy", "writes", "wsrelay"]


def test_the_package_under_test_runs_compiled_exactly_when_its_build_says_so():
    # scripts/test runs the gateway tests on the sources (LITEBOXD_GATEWAY_BUILD unset) and again
    # on a build of them (compiled): each pass must really test what it says it does.
    for name in COMPILED:
        importlib.import_module(f"liteboxd_gateway.{name}")
    expected = COMPILED if os.environ.get("LITEBOXD_GATEWAY_BUILD") == "compiled" else []
    assert compiled_modules() == expected


def pip_install(tmp_path, **env) -> tuple:
    """Install a copy of the gateway project into a directory; returns (its package dir, pip's output)."""
    project = tmp_path / "project"
    shutil.copytree(GATEWAY_PROJECT, project, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = tmp_path / "installed"
    result = pip_install_gateway(target, project, env)
    assert result.returncode == 0, result.stdout + result.stderr
    return target / "liteboxd_gateway", result.stdout + result.stderr


@pytest.mark.parametrize("env, reason", [
    ({"CC": "false"}, "building liteboxd_gateway.http1 failed"),  # a host without a C compiler
    ({"LITEBOXD_GATEWAY_NO_EXTENSIONS": "1"}, None),  # asked not to compile
], ids=["no-compiler", "no-extensions"])
def test_without_compiling_the_package_installs_as_plain_python_and_runs(tmp_path, env, reason):
    package, output = pip_install(tmp_path, **env)
    assert not list(package.glob("*.so"))
    assert sorted(path.stem for path in package.glob("*.py")) == sorted(
        path.stem for path in (GATEWAY_PROJECT / "src" / "liteboxd_gateway").glob("*.py"))
    if reason:
        assert reason in output and "the pure-Python modules are used" in output
    version = subprocess.run([sys.executable, "-m", "liteboxd_gateway", "--version"], capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(package.parent)}, check=False, timeout=60)
    assert version.returncode == 0 and version.stdout.strip(), version.stderr


def test_with_a_compiler_the_hot_modules_are_built_as_extensions(tmp_path):
    package, _output = pip_install(tmp_path)
    assert sorted(path.name.split(".")[0] for path in package.glob("*.so")) == COMPILED
    # The build imports and serves as the gateway: its modules load from the extensions.
    probe = (f"import {', '.join(f'liteboxd_gateway.{name}' for name in COMPILED)};"
             "from liteboxd_gateway.server import compiled_modules; print(' '.join(compiled_modules()))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(package.parent)})
    assert loaded.stdout.split() == COMPILED, loaded.stderr
