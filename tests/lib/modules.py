"""Run a collection module the way Ansible does: a separate Python process reading its arguments
from a JSON file and printing one JSON result. ``netns`` runs it inside a network namespace."""
import json
import os
import importlib
import subprocess
import sys
import tempfile

import yaml

from tests.lib.collection import REPO, install_on_path


# Keys any module may return without documenting them (Ansible's common return values).
COMMON_RETURN_KEYS = {"changed", "failed", "msg", "diff", "invocation", "warnings", "deprecations", "exception",
                      "rc", "stdout", "stderr", "stdout_lines", "stderr_lines"}

# The interpreter modules run under: the test venv's, or another one (e.g. Debian's python3 with
# the python3-pyroute2/python3-netaddr packages the roles install) to test against its libraries.
MODULE_PYTHON = os.environ.get("LITEBOXD_MODULE_PYTHON", sys.executable)


class ModuleFailed(AssertionError):
    def __init__(self, result):
        super().__init__(result.get("msg", result))
        self.result = result


def run_module(name, args, check=False, diff=False, netns=None, expect_fail=False, timeout=120):
    """Return the module's result dict; raise ModuleFailed unless it matches ``expect_fail``."""
    root = install_on_path()
    params = dict(args)
    params.update(_ansible_check_mode=check, _ansible_diff=diff)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump({"ANSIBLE_MODULE_ARGS": params}, fh)
        args_file = fh.name
    try:
        cmd = [MODULE_PYTHON, "-m", f"ansible_collections.liteboxd.sandbox_network.plugins.modules.{name}", args_file]
        if netns:
            cmd = ["ip", "netns", "exec", netns] + cmd
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO, check=False)
    finally:
        os.unlink(args_file)
    try:
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise AssertionError(f"module {name} printed no JSON result\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    failed = bool(result.get("failed"))
    if failed != expect_fail:
        raise ModuleFailed(result) if failed else AssertionError(f"module {name} was expected to fail: {result}")
    undocumented = set(result) - COMMON_RETURN_KEYS - documented_return_keys(name)
    assert not undocumented, f"module {name} returned keys its RETURN does not document: {sorted(undocumented)}"
    return result


def documented_return_keys(name):
    """The top-level keys of a module's RETURN."""
    module = importlib.import_module(f"ansible_collections.liteboxd.sandbox_network.plugins.modules.{name}")
    return set(yaml.safe_load(module.RETURN) or {})
