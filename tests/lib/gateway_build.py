"""The gateway package built as pip installs it: its hot modules compiled when Cython and a C
compiler are there (gateway/setup.py), plain Python otherwise."""
import os
import pathlib
import subprocess
import sys

GATEWAY_PROJECT = pathlib.Path(__file__).resolve().parents[2] / "gateway"


def pip_install_gateway(target, project=GATEWAY_PROJECT, env=None) -> subprocess.CompletedProcess:
    """pip-install ``project`` (no dependencies, this environment's Cython and setuptools) into the
    directory ``target``; pip's output is kept, verbose, for the build's own messages."""
    return subprocess.run(
        [sys.executable, "-m", "pip", "install", "-v", "--no-deps", "--no-build-isolation", "--disable-pip-version-check",
         "--target", str(target), str(project)],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, check=False, timeout=600)
