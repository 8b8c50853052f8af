"""The gateway package built as pip installs it: its hot modules compiled when Cython and a C
compiler are there (gateway/setup.py), plain Python otherwise; and as scripts/build-gateway.sh
builds it for the hosts (a wheelhouse) and for the cluster (an OCI image)."""
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


BUILD_SCRIPT = GATEWAY_PROJECT.parent / "scripts" / "build-gateway.sh"


def build_gateway(*args, env=None) -> dict:
    """Run scripts/build-gateway.sh (cached by content hash; its progress goes to stderr) and return
    what it printed: wheelhouse, and with ``image`` also image, image_archive and image_size."""
    result = subprocess.run(["bash", str(BUILD_SCRIPT), *args], stdout=subprocess.PIPE, text=True, check=True,
                            env={**os.environ, **(env or {})}, timeout=1800)
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
