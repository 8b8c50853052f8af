"""Throwaway network namespaces for tests: create, connect with veth pairs, run commands, clean up.

    with Netns() as a, Netns() as b:
        veth(a, "tun0", b, "tun0")
        a.ip("addr add 10.0.0.1/24 dev tun0")
        a.run(["ping", "-c1", "10.0.0.2"])
"""
import json
import os
import shlex
import subprocess
import uuid


class Netns:
    """A network namespace with a unique name; ``lo`` is up. Deleted on ``close``/context exit."""

    def __init__(self, prefix="lbxt"):
        self.name = "%s-%s" % (prefix, uuid.uuid4().hex[:8])
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        self._procs = []
        self.ip("link set lo up")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __str__(self):
        return self.name

    def run(self, argv, check=True, **kwargs):
        """Run ``argv`` (list or shell-like string) inside the namespace; return CompletedProcess."""
        if isinstance(argv, str):
            argv = shlex.split(argv)
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        # Checked below, so the error carries the command's output.
        proc = subprocess.run(["ip", "netns", "exec", self.name] + list(argv), check=False, **kwargs)
        if check and proc.returncode != 0:
            raise subprocess.CalledProcessError(proc.returncode, argv, proc.stdout, proc.stderr)
        return proc

    def popen(self, argv, **kwargs):
        """Start a background process in the namespace; it is killed on ``close``."""
        if isinstance(argv, str):
            argv = shlex.split(argv)
        proc = subprocess.Popen(["ip", "netns", "exec", self.name] + list(argv), **kwargs)
        self._procs.append(proc)
        return proc

    def ip(self, args, check=True):
        """``ip <args>`` in the namespace; returns stdout."""
        return self.run(["ip"] + shlex.split(args), check=check).stdout

    def ip_json(self, args):
        """``ip -j <args>`` parsed (empty output → [])."""
        out = self.run(["ip", "-j"] + shlex.split(args)).stdout.strip()
        return json.loads(out) if out else []

    def routing_state(self):
        """Every rule and route of both families, for before/after comparisons."""
        return {
            "rules4": self.ip_json("-4 rule show"),
            "rules6": self.ip_json("-6 rule show"),
            "routes4": self.ip_json("-4 route show table all"),
            "routes6": self.ip_json("-6 route show table all"),
        }

    def sysctl(self, key, value=None):
        path = "/proc/sys/" + key.replace(".", "/")
        if value is None:
            return self.run(["cat", path]).stdout.strip()
        self.run(["sh", "-c", "echo %s > %s" % (shlex.quote(str(value)), shlex.quote(path))])
        return str(value)

    def close(self):
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self._procs = []
        if os.path.exists("/run/netns/%s" % self.name):
            subprocess.run(["ip", "netns", "del", self.name], check=False)


def veth(ns_a, name_a, ns_b, name_b, up=True):
    """Create a veth pair ``name_a`` in ``ns_a`` ↔ ``name_b`` in ``ns_b`` (both up unless told)."""
    tmp = "v%s" % uuid.uuid4().hex[:10]
    ns_a.ip("link add %s type veth peer name %s netns %s" % (name_a, tmp, ns_b.name))
    ns_b.ip("link set %s name %s" % (tmp, name_b))
    if up:
        ns_a.ip("link set %s up" % name_a)
        ns_b.ip("link set %s up" % name_b)
