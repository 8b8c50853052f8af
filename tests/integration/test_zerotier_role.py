"""The zerotier role's join logic (tasks/join.yml) run by ansible-playbook against the API stub.

Installing the package and starting the service need Debian + systemd (the Molecule scenario
covers them); what runs here is everything after: reading authtoken.secret, join, authorize through
the controller API, wait for OK with an address, the published facts, idempotence and check mode.
The role's first-task validation of zerotier_network_id runs through the role's main entry point.
"""
import json
import os
import subprocess
import sys

import pytest

from tests.lib.collection import REPO
from tests.lib.zerotier_stub import ZeroTierStub

NWID = "8056c2e21c000001"
NODE = "0deadbeef1"

PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Run the zerotier role's join tasks
      ansible.builtin.include_role:
        name: liteboxd.sandbox_network.zerotier
        tasks_from: join.yml
      vars:
        zerotier_install_pending: false
    - name: Show the published facts
      ansible.builtin.debug:
        msg:
          zerotier_node_id: "{{ zerotier_node_id | default('') }}"
          zerotier_device: "{{ zerotier_device | default('') }}"
          zerotier_address: "{{ zerotier_address | default('') }}"
          zerotier_addresses: "{{ zerotier_addresses | default([]) }}"
"""

VALIDATE_PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  roles:
    - role: liteboxd.sandbox_network.zerotier
"""


@pytest.fixture
def stub():
    server = ZeroTierStub(node_address=NODE, config_polls=2).start()
    server.add_network(NWID, "10.147.17.0/24", private=True)
    yield server
    server.stop()


@pytest.fixture
def zerotier_home(tmp_path, stub):
    home = tmp_path / "zerotier-one"
    home.mkdir()
    (home / "authtoken.secret").write_text(stub.token)
    return home


def run_playbook(tmp_path, playbook, extra_vars, check=False, diff=False):
    """Run a playbook with the JSON callback; return (returncode, parsed output)."""
    path = tmp_path / "play.yml"
    path.write_text(playbook)
    (tmp_path / "vars.json").write_text(json.dumps(extra_vars))
    cmd = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,", str(path),
           "-e", "@%s" % (tmp_path / "vars.json"), "-e", "ansible_connection=local",
           "-e", "ansible_python_interpreter=%s" % sys.executable]
    if check:
        cmd.append("--check")
    if diff:
        cmd.append("--diff")
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=300, check=False)
    try:
        output = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError("ansible-playbook printed no JSON\nstdout:\n%s\nstderr:\n%s" % (proc.stdout, proc.stderr))
    return proc.returncode, output


def task_results(output):
    """{task name without the role prefix: result on localhost} for every task that ran."""
    results = {}
    for play in output["plays"]:
        for task in play["tasks"]:
            results[task["task"]["name"].split(" : ", 1)[-1]] = task["hosts"].get("localhost", {})
    return results


def role_vars(stub, home, **extra):
    values = dict(zerotier_network_id=NWID, zerotier_api_url=stub.url, zerotier_home=str(home),
                  zerotier_poll_interval=0.05, zerotier_wait_timeout=30, zerotier_authorize=True,
                  zerotier_member_api="controller", zerotier_member_api_url=stub.url,
                  zerotier_member_delegate_to="localhost", zerotier_member_name="egress-1")
    values.update(extra)
    return values


def test_join_authorize_wait_publishes_facts_and_is_idempotent(tmp_path, stub, zerotier_home):
    rc, output = run_playbook(tmp_path, PLAYBOOK, role_vars(stub, zerotier_home))
    assert rc == 0, output
    results = task_results(output)
    assert results["Show the published facts"]["msg"] == {
        "zerotier_node_id": NODE, "zerotier_device": "zt" + NWID[-8:],
        "zerotier_address": "10.147.17.10", "zerotier_addresses": ["10.147.17.10"]}
    assert results["Join the network"]["changed"] is True
    assert results["Authorize this node on the network's controller"]["changed"] is True
    member_posts = [r for r in stub.mutating_requests() if r["path"].startswith("/controller/")]
    assert [r["body"] for r in member_posts] == [{"authorized": True, "name": "egress-1"}]
    # The controller token was read from zerotier_home on the delegate host (the same file here).
    assert member_posts[0]["headers"]["x-zt1-auth"] == stub.token
    # The token never reaches the output.
    assert stub.token not in json.dumps(output)

    stub.requests.clear()
    rc, again = run_playbook(tmp_path, PLAYBOOK, role_vars(stub, zerotier_home))
    assert rc == 0
    assert again["stats"]["localhost"]["changed"] == 0
    assert stub.mutating_requests() == []

    rc, checked = run_playbook(tmp_path, PLAYBOOK, role_vars(stub, zerotier_home), check=True, diff=True)
    assert rc == 0 and checked["stats"]["localhost"]["changed"] == 0
    assert task_results(checked)["Show the published facts"]["msg"]["zerotier_address"] == "10.147.17.10"


def test_check_mode_on_a_fresh_node_predicts_join_and_authorization_without_posting(tmp_path, stub, zerotier_home):
    rc, output = run_playbook(tmp_path, PLAYBOOK, role_vars(stub, zerotier_home), check=True, diff=True)
    assert rc == 0, output
    results = task_results(output)
    assert results["Join the network"]["changed"] is True
    assert results["Authorize this node on the network's controller"]["changed"] is True
    assert stub.mutating_requests() == []
    assert stub.joined == {} and stub.members == {}


def test_unauthorized_node_fails_with_the_authorize_message(tmp_path, stub, zerotier_home):
    rc, output = run_playbook(tmp_path, PLAYBOOK, role_vars(stub, zerotier_home, zerotier_authorize=False))
    assert rc != 0
    failed = task_results(output)["Wait until the network is OK with an assigned address"]
    assert "authorize node %s on network %s" % (NODE, NWID) in failed["msg"]


@pytest.mark.parametrize("bad", ["8056c2e21c00001", "8056c2e21c0000011", "not-hex-at-all!!", ""])
def test_bad_network_id_fails_in_the_first_task_naming_the_variable(tmp_path, stub, zerotier_home, bad):
    rc, output = run_playbook(tmp_path, VALIDATE_PLAYBOOK, role_vars(stub, zerotier_home, zerotier_network_id=bad))
    assert rc != 0
    results = task_results(output)
    failed = [(name, r) for name, r in results.items() if r.get("failed")]
    assert [name for name, result in failed] == ["Validate the zerotier role variables"]
    assert "zerotier_network_id must be a ZeroTier network id, exactly 16 hexadecimal" in failed[0][1]["msg"]
    assert stub.requests == []


def test_central_without_a_token_is_refused_before_anything_runs(tmp_path, stub, zerotier_home):
    rc, output = run_playbook(tmp_path, VALIDATE_PLAYBOOK,
                              role_vars(stub, zerotier_home, zerotier_member_api="central"))
    assert rc != 0
    failed = [r for r in task_results(output).values() if r.get("failed")]
    assert failed[0]["msg"] == "zerotier_member_api_token is required when zerotier_member_api is central."
    assert stub.requests == []


INSTALL_PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Run the zerotier role's install tasks
      ansible.builtin.include_role:
        name: liteboxd.sandbox_network.zerotier
        tasks_from: install.yml
"""


@pytest.fixture(scope="module")
def signing_key(tmp_path_factory):
    """An armored public key made here (the real ZeroTier key cannot be downloaded) and its fingerprint."""
    home = tmp_path_factory.mktemp("gnupg")
    home.chmod(0o700)
    env = dict(os.environ, GNUPGHOME=str(home))
    subprocess.run(["gpg", "--batch", "--passphrase", "", "--quick-gen-key", "Test Repo Key <repo@liteboxd.invalid>",
                    "ed25519", "sign", "never"], check=True, capture_output=True, env=env)
    listing = subprocess.run(["gpg", "--with-colons", "--list-keys"], check=True, capture_output=True, text=True,
                             env=env).stdout
    fingerprint = [line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")][0]
    key = home / "key.asc"
    key.write_text(subprocess.run(["gpg", "--armor", "--export", fingerprint], check=True, capture_output=True,
                                  text=True, env=env).stdout)
    yield key, fingerprint
    # gpg started an agent for this home; it would outlive the run.
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=True, capture_output=True)


def repo_vars(tmp_path, key, fingerprint):
    return dict(zerotier_network_id=NWID, zerotier_repo_key_url="file://%s" % key,
                zerotier_repo_key_fingerprint=fingerprint, zerotier_repo_keyring=str(tmp_path / "zerotier-one.asc"),
                zerotier_repo_sources_file=str(tmp_path / "zerotier-one.sources"), zerotier_repo_suite="bookworm",
                ansible_python_interpreter="/usr/bin/python3")


def test_repository_key_with_another_fingerprint_is_removed_and_no_source_written(tmp_path, signing_key):
    key = signing_key[0]
    wrong = "74A5E9C458E1A431F1DA57A71657198823E52A61"
    rc, output = run_playbook(tmp_path, INSTALL_PLAYBOOK, repo_vars(tmp_path, key, wrong))
    assert rc != 0
    failed = task_results(output)["Stop on the key error"]
    assert "does not have the fingerprint zerotier_repo_key_fingerprint (%s)" % wrong in failed["msg"]
    assert not (tmp_path / "zerotier-one.asc").exists()
    assert not (tmp_path / "zerotier-one.sources").exists()


def test_repository_key_with_the_pinned_fingerprint_passes_and_check_mode_predicts_the_source(tmp_path, signing_key):
    key, fingerprint = signing_key
    # The key is already in place (as after a first run); check mode verifies it and predicts the
    # source without writing it, and predicts the package without asking apt for it.
    (tmp_path / "zerotier-one.asc").write_text(key.read_text())
    spaced = " ".join(fingerprint[i:i + 4] for i in range(0, len(fingerprint), 4)).lower()
    rc, output = run_playbook(tmp_path, INSTALL_PLAYBOOK, repo_vars(tmp_path, key, spaced), check=True, diff=True)
    assert rc == 0, output
    results = task_results(output)
    assert results["Check the key against zerotier_repo_key_fingerprint"].get("failed") is not True
    source = results["Add ZeroTier's apt source"]
    assert source["changed"] is True
    after = source["diff"][0]["after"]
    assert "URIs: https://download.zerotier.com/debian/bookworm\nSuites: bookworm\n" in after
    assert "Signed-By: %s" % (tmp_path / "zerotier-one.asc") in after
    assert results["Install zerotier-one from the repository"].get("skipped") is True
    assert not (tmp_path / "zerotier-one.sources").exists()
