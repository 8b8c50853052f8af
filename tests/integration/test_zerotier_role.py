"""The zerotier role's join and leave logic run by ansible-playbook against the ZeroTier stub.

Installing the package and starting the service need Debian + systemd (the Molecule scenario
covers them, with a stand-in daemon that carries packets); what runs here is everything after:
join, authorize on the controller (the token read from a file where the call runs), wait for OK
with an address, the published facts, idempotence, check mode, leaving through the API, and the
role's first-task validations. The stub behaves like zerotier-one 1.14.1 (docs/zerotier.md): the
node and the controller are two daemons, with the real daemon's status sequence.
"""
import json
import os
import subprocess
import sys

import pytest

from tests.integration.conftest import ZEROTIER_NODE, ZEROTIER_NWID
from tests.lib.collection import REPO
from tests.lib.zerotier_stub import device_name

NWID = ZEROTIER_NWID
NODE = ZEROTIER_NODE

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

ABSENT_PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Run the zerotier role's leave tasks
      ansible.builtin.include_role:
        name: liteboxd.sandbox_network.zerotier
        tasks_from: absent.yml
"""

VALIDATE_PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  roles:
    - role: liteboxd.sandbox_network.zerotier
"""


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


def role_vars(world, **extra):
    values = dict(zerotier_network_id=NWID, zerotier_api_url=world.node.url, zerotier_home=str(world.node_home),
                  zerotier_poll_interval=0.05, zerotier_wait_timeout=30, zerotier_authorize=True,
                  zerotier_member_api="controller", zerotier_member_api_url=world.controller.url,
                  zerotier_member_api_token_file=str(world.controller_home / "authtoken.secret"),
                  zerotier_member_delegate_to="localhost", zerotier_member_name="egress-1")
    values.update(extra)
    return values


def test_join_authorize_wait_publishes_facts_and_is_idempotent(tmp_path, world):
    """[REC-1] the node's join makes its record on the controller; the role authorizes it. [SVC-8] the
    device is named from the network id."""
    rc, output = run_playbook(tmp_path, PLAYBOOK, role_vars(world))
    assert rc == 0, output
    results = task_results(output)
    address = world.controller.controller.members[(NWID, NODE)]["ipAssignments"][0]
    assert results["Show the published facts"]["msg"] == {
        "zerotier_node_id": NODE, "zerotier_device": device_name(NWID),
        "zerotier_address": address, "zerotier_addresses": [address]}
    assert results["Join the network"]["changed"] is True
    assert results["Authorize this node on the network's controller"]["changed"] is True
    member_posts = world.controller.mutating_requests()
    assert [r["body"] for r in member_posts] == [{"authorized": True, "name": "egress-1"}]
    # The controller's token was read from its file where the call ran (the delegate), not passed around.
    assert member_posts[0]["headers"]["x-zt1-auth"] == world.controller.token
    assert world.controller.token not in json.dumps(output) and world.node.token not in json.dumps(output)

    world.node.requests.clear()
    world.controller.requests.clear()
    rc, again = run_playbook(tmp_path, PLAYBOOK, role_vars(world))
    assert rc == 0
    assert again["stats"]["localhost"]["changed"] == 0
    assert world.node.mutating_requests() == [] and world.controller.mutating_requests() == []

    rc, checked = run_playbook(tmp_path, PLAYBOOK, role_vars(world), check=True, diff=True)
    assert rc == 0 and checked["stats"]["localhost"]["changed"] == 0
    assert task_results(checked)["Show the published facts"]["msg"]["zerotier_address"] == address


def test_the_join_sequence_does_not_rely_on_the_time_between_tasks(tmp_path, make_world):
    """Issue 16, item 1. [TIME-2] a denied node keeps reporting ACCESS_DENIED after its authorization, here
    for longer than Ansible takes between the authorization and the wait: the role still succeeds."""
    world = make_world(authorize_delay=5.0)
    rc, output = run_playbook(tmp_path, PLAYBOOK, role_vars(world, zerotier_settle=15))
    assert rc == 0, output
    assert task_results(output)["Show the published facts"]["msg"]["zerotier_device"] == device_name(NWID)
    statuses = [r for r in world.node.requests if r["path"] == "/network/" + NWID and r["method"] == "GET"]
    assert len(statuses) > 3  # it read the late ACCESS_DENIED and waited it out


def test_check_mode_on_a_fresh_node_predicts_join_and_authorization_without_posting(tmp_path, world):
    rc, output = run_playbook(tmp_path, PLAYBOOK, role_vars(world), check=True, diff=True)
    assert rc == 0, output
    results = task_results(output)
    assert results["Join the network"]["changed"] is True
    assert results["Authorize this node on the network's controller"]["changed"] is True
    assert world.node.mutating_requests() == [] and world.controller.mutating_requests() == []
    assert world.node.node.joins == {} and world.controller.controller.members == {}


def test_unauthorized_node_fails_with_the_authorize_message(tmp_path, world):
    rc, output = run_playbook(tmp_path, PLAYBOOK, role_vars(world, zerotier_authorize=False, zerotier_settle=1))
    assert rc != 0
    failed = task_results(output)["Wait until the network is OK with an assigned address"]
    assert "authorize node %s on network %s" % (NODE, NWID) in failed["msg"]


def test_a_ping_that_gets_no_answer_fails_naming_the_device_and_the_target(tmp_path, world):
    """The role proves traffic, not only status ([TIME-3]: a de-authorized node reports OK for up to a
    minute). Here nothing answers (the stub has no data path): the failure names device and target."""
    rc, output = run_playbook(tmp_path, PLAYBOOK, role_vars(world, zerotier_ping_targets=["192.0.2.7"],
                                                            zerotier_ping_timeout=2))
    assert rc != 0
    failed = task_results(output)["Prove the tunnel carries traffic"]
    assert "192.0.2.7" in failed["msg"] and device_name(NWID) in failed["msg"]


def test_absent_leaves_through_the_api_whatever_started_the_daemon(tmp_path, world):
    """Issue 16, item 6. No systemd unit runs this daemon, but its API answers: the role leaves through
    it. [SVC-6] then [SVC-7] (a second leave finds nothing to do)."""
    world.node.node.join(NWID, {}, 0)
    rc, output = run_playbook(tmp_path, ABSENT_PLAYBOOK, role_vars(world))
    assert rc == 0, output
    assert task_results(output)["Leave the ZeroTier network"]["changed"] is True
    assert [(r["method"], r["path"]) for r in world.node.mutating_requests()] == [("DELETE", "/network/" + NWID)]
    assert world.node.node.joins == {}

    rc, again = run_playbook(tmp_path, ABSENT_PLAYBOOK, role_vars(world))
    assert rc == 0 and again["stats"]["localhost"]["changed"] == 0


def test_absent_with_a_silent_api_says_it_could_not_leave(tmp_path, world):
    world.node.stop()
    rc, output = run_playbook(tmp_path, ABSENT_PLAYBOOK, role_vars(world))
    assert rc == 0, output
    message = task_results(output)["Say why the network could not be left"]["msg"]
    assert "does not answer" in message and NWID in message


@pytest.mark.parametrize("bad", ["8056c2e21c00001", "8056c2e21c0000011", "not-hex-at-all!!", ""])
def test_bad_network_id_fails_in_the_first_task_naming_the_variable(tmp_path, world, bad):
    rc, output = run_playbook(tmp_path, VALIDATE_PLAYBOOK, role_vars(world, zerotier_network_id=bad))
    assert rc != 0
    results = task_results(output)
    failed = [(name, r) for name, r in results.items() if r.get("failed")]
    assert [name for name, result in failed] == ["Validate the zerotier role variables"]
    assert "zerotier_network_id must be a ZeroTier network id, exactly 16 hexadecimal" in failed[0][1]["msg"]
    assert world.node.requests == [] and world.controller.requests == []


def test_central_without_a_token_is_refused_before_anything_runs(tmp_path, world):
    rc, output = run_playbook(tmp_path, VALIDATE_PLAYBOOK, role_vars(world, zerotier_member_api="central"))
    assert rc != 0
    failed = [r for r in task_results(output).values() if r.get("failed")]
    assert failed[0]["msg"] == "zerotier_member_api_token is required when zerotier_member_api is central."
    assert world.node.requests == []


def test_a_remote_controller_over_plain_http_is_refused_before_anything_runs(tmp_path, world):
    """Issue 13, item 11. [AUTH-3] zerotier-one answers its API on loopback only unless allowManagementFrom
    opens it, and then the token crosses the network in clear: the role refuses, and says to run the
    calls on the controller host instead."""
    rc, output = run_playbook(tmp_path, VALIDATE_PLAYBOOK, role_vars(world, zerotier_member_api_url="http://10.20.0.5:9993"))
    assert rc != 0
    failed = [r for r in task_results(output).values() if r.get("failed")]
    message = failed[0]["msg"]
    assert "zerotier_member_api_url (http://10.20.0.5:9993)" in message
    assert "zerotier_member_delegate_to" in message and "zerotier_api_private_link" in message
    assert world.node.requests == [] and world.controller.requests == []


def test_opening_the_api_to_other_hosts_is_refused_without_a_private_link(tmp_path, world):
    """[AUTH-3] allowManagementFrom beyond loopback in zerotier_local_conf would put this node's token on
    the network in clear: refused unless zerotier_api_private_link says the link is private."""
    local_conf = {"settings": {"allowManagementFrom": ["127.0.0.1/32", "10.20.0.0/24"]}}
    rc, output = run_playbook(tmp_path, VALIDATE_PLAYBOOK, role_vars(world, zerotier_local_conf=local_conf))
    assert rc != 0
    failed = [r for r in task_results(output).values() if r.get("failed")]
    assert "opens zerotier-one's API to 10.20.0.0/24" in failed[0]["msg"]
    assert "zerotier_api_private_link" in failed[0]["msg"]
    assert world.node.requests == []


@pytest.mark.parametrize("extra", [
    {"zerotier_local_conf": {"settings": {"allowManagementFrom": ["127.0.0.1/32", "::1"]}}},
    {"zerotier_local_conf": {"settings": {"allowManagementFrom": ["10.20.0.0/24"]}}, "zerotier_api_private_link": True},
    {"zerotier_member_api_url": "http://10.20.0.5:9993", "zerotier_api_private_link": True},
    {"zerotier_member_api_url": "https://zt-controller.example.internal"},
    {"zerotier_member_api_url": "http://127.0.0.1:9993"},
    {"zerotier_member_api_url": ""},
])
def test_a_local_tls_or_declared_private_controller_url_passes_validation(tmp_path, world, extra):
    play = VALIDATE_PLAYBOOK.replace("  roles:\n    - role: liteboxd.sandbox_network.zerotier\n", """  tasks:
    - name: Validate only
      ansible.builtin.include_role:
        name: liteboxd.sandbox_network.zerotier
        tasks_from: validate.yml
""")
    rc, output = run_playbook(tmp_path, play, role_vars(world, **extra))
    assert rc == 0, output


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
