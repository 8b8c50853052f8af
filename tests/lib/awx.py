"""AWX's jobs, shaped as AWX shapes them, run by ansible-runner (the engine AWX runs jobs with).

AWX hands ansible-runner a private data directory:
  env/envvars     the environment its credentials inject (and nothing else here);
  env/extravars   the job template's extra variables and survey answers;
  env/cmdline     the ansible-playbook options it builds: the job tags, and ``-e @<file>`` for the
                  extra variables a custom credential injects;
  env/tmp*        the files credentials inject (a CA certificate, a kubeconfig, extra variables);
  inventory/hosts an executable script that prints the inventory as JSON;
  project/        the project's checkout; the job's playbook is a file in it.
Credentials are injected the way AWX's own code does it (awx/main/models/credential/injectors.py,
``kubernetes_bearer_token``, and ``CredentialType.inject_credential`` for custom types): each file
made with mkstemp in env/ (mode 0600; 0400 for the extra variables), templates rendered in Jinja's
immutable sandbox with the credential's inputs and ``tower.filename``, injected extra variables
written as ``!unsafe`` strings so Ansible never templates them. The job runs with process isolation
off, as on an execution node whose execution environment is this virtualenv, from an environment
that holds nothing but PATH, HOME and the locale.
"""
import json
import os
import pathlib
import shutil
import stat
import subprocess
import sys
import tempfile
from types import SimpleNamespace

import yaml
from jinja2.sandbox import ImmutableSandboxedEnvironment

from tests.lib.collection import REPO, collections_root

RUNNER = pathlib.Path(sys.executable).parent / "ansible-runner"
PROJECT = REPO / "extensions" / "awx" / "project"


class UnsafeDumper(yaml.SafeDumper):
    """AWX's safe_dump: every string tagged !unsafe."""


UnsafeDumper.add_representer(str, lambda dumper, value: dumper.represent_scalar("!unsafe", value))


def credential_type(name):
    """A custom credential type shipped in extensions/awx/credential_types/."""
    return yaml.safe_load((REPO / "extensions" / "awx" / "credential_types" / ("%s.yml" % name)).read_text())


class Job:
    """One job's private data directory, filled as AWX fills it, and its run."""

    def __init__(self, root, playbook, inventory, extravars=None, tags=None):
        self.root = pathlib.Path(root)
        self.playbook = playbook
        self.inventory = inventory
        self.extravars = dict(extravars or {})
        self.env = {}
        self.cmdline = ["-t", ",".join(tags)] if tags else []
        self.project_playbooks = {}
        (self.root / "env").mkdir(parents=True)
        self.result = None

    def _secret_file(self, content, mode):
        handle, path = tempfile.mkstemp(dir=self.root / "env")
        with os.fdopen(handle, "w") as out:
            out.write(content)
        os.chmod(path, mode)
        return path

    def inject_bearer_token(self, host, bearer_token, ssl_ca_cert=None, verify_ssl=True):
        """AWX's built-in "OpenShift or Kubernetes API Bearer Token" credential."""
        self.env["K8S_AUTH_HOST"] = host
        self.env["K8S_AUTH_API_KEY"] = bearer_token
        if verify_ssl and ssl_ca_cert is not None:
            self.env["K8S_AUTH_VERIFY_SSL"] = "True"
            self.env["K8S_AUTH_SSL_CA_CERT"] = self._secret_file(ssl_ca_cert, stat.S_IRUSR | stat.S_IWUSR)
        else:
            self.env["K8S_AUTH_VERIFY_SSL"] = "False"

    def inject_custom(self, credential, inputs):
        """A credential of a custom type (``credential`` as loaded from its YAML) with these inputs."""
        sandbox = ImmutableSandboxedEnvironment()
        tower = SimpleNamespace()
        namespace = dict(inputs, tower=tower)
        for field in credential["inputs"]["fields"]:
            if field["type"] == "boolean":
                namespace.setdefault(field["id"], False)
        injectors = credential["injectors"]
        for label, template in injectors.get("file", {}).items():
            path = self._secret_file(sandbox.from_string(template).render(**namespace), stat.S_IRUSR | stat.S_IWUSR)
            if "." not in label:
                tower.filename = path
            else:
                if not hasattr(tower, "filename"):
                    tower.filename = SimpleNamespace()
                setattr(tower.filename, label.split(".", 1)[1], path)
        for variable, template in injectors.get("env", {}).items():
            self.env[variable] = sandbox.from_string(template).render(**namespace)

        def render(node):
            if isinstance(node, dict):
                return {render(key): render(value) for key, value in node.items()}
            if isinstance(node, list):
                return [render(item) for item in node]
            return sandbox.from_string(node).render(**namespace)

        extra_vars = render(injectors.get("extra_vars", {}))
        if extra_vars:
            path = self._secret_file(yaml.dump(extra_vars, Dumper=UnsafeDumper), stat.S_IRUSR)
            self.cmdline += ["-e", "@%s" % path]

    def _write(self):
        env = self.root / "env"
        (env / "envvars").write_text(yaml.safe_dump(self.env))
        (env / "extravars").write_text(yaml.safe_dump(self.extravars))
        (env / "cmdline").write_text(" ".join(self.cmdline))
        inventory = self.root / "inventory" / "hosts"
        inventory.parent.mkdir()
        inventory.write_text("#! /usr/bin/env python3\n# -*- coding: utf-8 -*-\nprint(%r)\n"
                             % json.dumps(self.inventory))
        inventory.chmod(0o700)
        project = self.root / "project"
        shutil.copytree(PROJECT, project)
        # What AWX installs from the project's collections/requirements.yml, next to its playbooks.
        (project / "collections" / "ansible_collections").symlink_to(collections_root() / "ansible_collections")

    def run(self, ident="job"):
        self._write()
        # Playbooks of the project's own, besides the ones extensions/awx/project ships.
        for name, plays in self.project_playbooks.items():
            (self.root / "project" / name).write_text(yaml.safe_dump(plays, sort_keys=False))
        home = self.root.parent / ("%s-home" % self.root.name)
        home.mkdir(exist_ok=True)
        environment = {"PATH": "%s:/usr/sbin:/usr/bin:/sbin:/bin" % pathlib.Path(sys.executable).parent,
                       "HOME": str(home), "LANG": "C.UTF-8"}
        proc = subprocess.run([str(RUNNER), "run", str(self.root), "-p", self.playbook, "--ident", ident],
                              capture_output=True, text=True, env=environment, timeout=600, check=False)
        artifacts = self.root / "artifacts" / ident
        events = [json.loads(path.read_text()) for path in sorted((artifacts / "job_events").glob("*.json"),
                                                                  key=lambda p: int(p.name.split("-", 1)[0]))]
        self.result = SimpleNamespace(
            status=(artifacts / "status").read_text().strip(), rc=int((artifacts / "rc").read_text()),
            stdout=(artifacts / "stdout").read_text(), events=events, runner=proc,
            event_text="\n".join((artifacts / "job_events" / name).read_text()
                                 for name in sorted(os.listdir(artifacts / "job_events"))))
        return self.result

    def stats(self):
        """The playbook_on_stats event's counters per kind (changed, failures, ...) per host."""
        stats = [event["event_data"] for event in self.result.events if event["event"] == "playbook_on_stats"]
        return stats[-1] if stats else {}
