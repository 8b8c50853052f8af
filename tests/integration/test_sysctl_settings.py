"""sysctl_settings against a real kernel: the per-namespace parameters of a throwaway network namespace."""
import pytest

from tests.lib.modules import run_module
from tests.lib.netns import Netns, veth


@pytest.fixture
def host():
    """A namespace with a device ``tun0`` (its rp_filter key exists only while the device does)."""
    with Netns() as ns, Netns() as peer:
        veth(ns, "tun0", peer, "tun0")
        ns.sysctl("net.ipv4.ip_forward", 0)
        ns.sysctl("net.ipv4.conf.all.rp_filter", 2)
        ns.sysctl("net.ipv4.conf.tun0.rp_filter", 1)
        yield ns


def values(ns):
    return {key: ns.sysctl(key) for key in ("net.ipv4.ip_forward", "net.ipv4.conf.all.rp_filter",
                                            "net.ipv4.conf.tun0.rp_filter")}


def args(tmp_path, **overrides):
    result = dict(settings={"net.ipv4.ip_forward": 1, "net.ipv4.conf.all.rp_filter": "0",
                            "net.ipv4.conf.tun0.rp_filter": 0},
                  path=str(tmp_path / "sysctl.d" / "90-test.conf"), header="Managed by a test.\nSecond line.",
                  saved_path=str(tmp_path / "state" / "sysctl-before.conf"))
    result.update(overrides)
    return result


def test_check_mode_predicts_then_apply_then_idempotent(host, tmp_path):
    before = values(host)
    predicted = run_module("sysctl_settings", args(tmp_path), check=True, diff=True, netns=host.name)
    assert predicted["changed"] and predicted["saved"]
    assert predicted["changed_keys"] == ["net.ipv4.conf.all.rp_filter", "net.ipv4.conf.tun0.rp_filter",
                                         "net.ipv4.ip_forward"]
    assert values(host) == before, "check mode changed the kernel"
    assert not (tmp_path / "sysctl.d").exists() and not (tmp_path / "state").exists(), "check mode wrote a file"

    applied = run_module("sysctl_settings", args(tmp_path), diff=True, netns=host.name)
    assert applied["changed_keys"] == predicted["changed_keys"] and applied["diff"] == predicted["diff"]
    assert values(host) == {"net.ipv4.ip_forward": "1", "net.ipv4.conf.all.rp_filter": "0",
                            "net.ipv4.conf.tun0.rp_filter": "0"}
    persisted = tmp_path / "sysctl.d" / "90-test.conf"
    assert persisted.read_text() == ("# Managed by a test.\n# Second line.\nnet.ipv4.conf.all.rp_filter=0\n"
                                     "net.ipv4.conf.tun0.rp_filter=0\nnet.ipv4.ip_forward=1\n")
    assert oct(persisted.stat().st_mode & 0o777) == "0o644"
    saved = (tmp_path / "state" / "sysctl-before.conf").read_text().splitlines()
    assert saved[1:] == ["net.ipv4.conf.all.rp_filter=2", "net.ipv4.conf.tun0.rp_filter=1", "net.ipv4.ip_forward=0"]
    assert "net.ipv4.ip_forward=0" in applied["diff"][1]["before"]
    assert "net.ipv4.ip_forward=1" in applied["diff"][1]["after"]

    again = run_module("sysctl_settings", args(tmp_path), diff=True, netns=host.name)
    assert not again["changed"] and again["changed_keys"] == [] and not again["saved"]
    assert again["diff"][0]["before"] == again["diff"][0]["after"]
    assert not run_module("sysctl_settings", args(tmp_path), check=True, netns=host.name)["changed"]


def test_check_mode_predicts_a_mode_fix_of_the_persisted_file(host, tmp_path):
    run_module("sysctl_settings", args(tmp_path), netns=host.name)
    persisted = tmp_path / "sysctl.d" / "90-test.conf"
    persisted.chmod(0o600)
    assert run_module("sysctl_settings", args(tmp_path), check=True, netns=host.name)["changed"]
    assert oct(persisted.stat().st_mode & 0o777) == "0o600", "check mode changed the mode"
    assert run_module("sysctl_settings", args(tmp_path), netns=host.name)["changed"]
    assert oct(persisted.stat().st_mode & 0o777) == "0o644"
    assert not run_module("sysctl_settings", args(tmp_path), check=True, netns=host.name)["changed"]


def test_a_value_changed_by_hand_is_set_again_and_the_saved_values_stay_those_of_before(host, tmp_path):
    run_module("sysctl_settings", args(tmp_path), netns=host.name)
    host.sysctl("net.ipv4.ip_forward", 0)
    result = run_module("sysctl_settings", args(tmp_path), netns=host.name)
    assert result["changed"] and result["changed_keys"] == ["net.ipv4.ip_forward"] and not result["saved"]
    assert host.sysctl("net.ipv4.ip_forward") == "1"
    assert "net.ipv4.ip_forward=0" in (tmp_path / "state" / "sysctl-before.conf").read_text()


def test_a_key_added_later_is_recorded_without_touching_what_was_recorded(host, tmp_path):
    first = args(tmp_path, settings={"net.ipv4.ip_forward": 1})
    run_module("sysctl_settings", first, netns=host.name)
    result = run_module("sysctl_settings", args(tmp_path), netns=host.name)
    assert result["saved"]
    saved = (tmp_path / "state" / "sysctl-before.conf").read_text()
    assert "net.ipv4.ip_forward=0" in saved and "net.ipv4.conf.tun0.rp_filter=1" in saved


def test_a_missing_key_fails_before_any_change(host, tmp_path):
    before = values(host)
    bad = args(tmp_path)
    bad["settings"]["net.ipv4.conf.zt0.rp_filter"] = 0
    result = run_module("sysctl_settings", bad, netns=host.name, expect_fail=True)
    assert "net.ipv4.conf.zt0.rp_filter" in result["msg"] and "/proc/sys/net/ipv4/conf/zt0/rp_filter" in result["msg"]
    assert "Nothing was changed" in result["msg"]
    assert values(host) == before
    assert not (tmp_path / "sysctl.d").exists() and not (tmp_path / "state").exists()


def test_a_value_the_kernel_refuses_undoes_the_values_set_before_it(host, tmp_path):
    before = values(host)
    # Keys are set in name order: rp_filter is set, then ip_forward is refused.
    refused = args(tmp_path, settings={"net.ipv4.conf.all.rp_filter": 0, "net.ipv4.ip_forward": "on"})
    result = run_module("sysctl_settings", refused, netns=host.name, expect_fail=True)
    assert "refused net.ipv4.ip_forward = on" in result["msg"]
    assert values(host) == before
    assert not (tmp_path / "sysctl.d").exists() and not (tmp_path / "state").exists()


@pytest.mark.parametrize("settings, named", [
    ({"ip_forward": 1}, "ip_forward"),
    ({"net.ipv4.ip_forward": ""}, "net.ipv4.ip_forward"),
    ({"net.ipv4.ip_forward": [1]}, "net.ipv4.ip_forward"),
    ({}, "at least one"),
])
def test_bad_settings_are_refused(host, tmp_path, settings, named):
    result = run_module("sysctl_settings", args(tmp_path, settings=settings), netns=host.name, expect_fail=True)
    assert named in result["msg"]
    assert not (tmp_path / "sysctl.d").exists()


def test_absent_restores_the_values_from_before_and_removes_both_files(host, tmp_path):
    before = values(host)
    run_module("sysctl_settings", args(tmp_path), netns=host.name)
    absent = dict(path=str(tmp_path / "sysctl.d" / "90-test.conf"),
                  saved_path=str(tmp_path / "state" / "sysctl-before.conf"), state="absent")
    predicted = run_module("sysctl_settings", absent, check=True, diff=True, netns=host.name)
    assert predicted["changed"] and (tmp_path / "sysctl.d" / "90-test.conf").exists()
    assert host.sysctl("net.ipv4.ip_forward") == "1"
    # A device gone since: its key is skipped, not an error.
    host.ip("link del tun0")
    result = run_module("sysctl_settings", absent, diff=True, netns=host.name)
    assert result["changed_keys"] == ["net.ipv4.conf.all.rp_filter", "net.ipv4.ip_forward"]
    assert host.sysctl("net.ipv4.ip_forward") == before["net.ipv4.ip_forward"]
    assert host.sysctl("net.ipv4.conf.all.rp_filter") == before["net.ipv4.conf.all.rp_filter"]
    assert "net.ipv4.ip_forward=1" in result["diff"][0]["before"] and result["diff"][0]["after"] == ""
    assert not (tmp_path / "sysctl.d" / "90-test.conf").exists()
    assert not (tmp_path / "state" / "sysctl-before.conf").exists()
    assert not run_module("sysctl_settings", absent, netns=host.name)["changed"]
