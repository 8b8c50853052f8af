"""What the collection says about itself agrees everywhere: one licence, one version (galaxy.yml),
version ranges in its metadata with the tested pins inside them, and one supported ansible-core range
whose bottom is the version scripts/oldest-ansible.sh tests."""
import re
import subprocess

import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from tests.lib.collection import REPO

LICENCE = "GPL-3.0-or-later"
HEADER = "# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)"
GALAXY = yaml.safe_load((REPO / "galaxy.yml").read_text())


def tracked_files():
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout
    return [REPO / name for name in listed.split("\0") if name and (REPO / name).is_file()]


def requirements(path):
    """The requirement lines of a pip requirements file (no options, no includes)."""
    lines = (line.split("#", 1)[0].strip() for line in (REPO / path).read_text().splitlines())
    return [Requirement(line) for line in lines if line and not line.startswith("-")]


def pins(path):
    return {req.name.lower(): next(iter(req.specifier)).version for req in requirements(path)}


def test_one_licence_everywhere():
    assert (REPO / "COPYING").read_text().startswith("                    GNU GENERAL PUBLIC LICENSE\n"
                                                     "                       Version 3, 29 June 2007")
    assert GALAXY["license"] == [LICENCE]
    for meta in sorted(REPO.glob("roles/*/meta/main.yml")):
        assert yaml.safe_load(meta.read_text())["galaxy_info"]["license"] == LICENCE, meta
    assert 'license = { text = "%s" }' % LICENCE in (REPO / "gateway" / "pyproject.toml").read_text()
    for plugin in sorted(REPO.glob("plugins/**/*.py")):
        if plugin.name != "__init__.py":
            assert HEADER in plugin.read_text(), plugin
    other = [str(path.relative_to(REPO)) for path in tracked_files()
             if re.search(r"apache[- ]?(2|license)|\bMIT license|\bBSD[- ]\d", path.read_text(errors="replace"), re.I)
             and path.name != "COPYING"]
    assert other == []


def test_galaxy_yml_holds_the_one_version():
    version = GALAXY["version"]
    assert re.match(r"^\d+\.\d+\.\d+$", version)
    # The gateway ships inside the collection and is released with it.
    assert '__version__ = "%s"' % version in (REPO / "gateway/src/liteboxd_gateway/version.py").read_text()
    # Nothing else names a built artefact of a particular version.
    named = [str(path.relative_to(REPO)) for path in tracked_files()
             if path.suffix in (".yml", ".yaml", ".md", ".sh", ".py", ".txt", ".cfg", ".toml") and not path.is_symlink()
             and re.search(r"sandbox_network-\d+\.\d+\.\d+", path.read_text(errors="replace"))]
    assert named == []


def test_the_collection_metadata_declares_ranges_the_tested_pins_satisfy():
    for name, spec in GALAXY["dependencies"].items():
        assert not spec.startswith("=="), name
    ee_meta = yaml.safe_load((REPO / "meta" / "execution-environment.yml").read_text())["dependencies"]
    ranges = requirements(ee_meta["python"])
    assert ranges and all(spec.operator not in ("==", "===") for req in ranges for spec in req.specifier)
    tested = pins("requirements/controller.txt")
    for req in ranges:
        assert req.specifier.contains(tested[req.name.lower()]), "%s %s" % (req, tested[req.name.lower()])
    assert (REPO / ee_meta["system"]).is_file()


def test_the_execution_environment_pins_what_is_tested():
    ee = yaml.safe_load((REPO / "execution-environment.yml").read_text())
    dependencies = ee["dependencies"]
    assert dependencies["python"] == "requirements/controller.txt"
    assert dependencies["ansible_core"]["package_pip"] == "ansible-core==%s" % pins("requirements/controller.txt")[
        "ansible-core"]
    assert dependencies["ansible_runner"]["package_pip"] == "ansible-runner==%s" % pins("requirements/dev.txt")[
        "ansible-runner"]
    collections = {entry["name"]: entry.get("version") for entry in dependencies["galaxy"]["collections"]}
    for name, spec in GALAXY["dependencies"].items():
        assert collections[name] == spec


def test_the_claimed_ansible_core_range_is_the_tested_one():
    runtime = yaml.safe_load((REPO / "meta" / "runtime.yml").read_text())
    claimed = SpecifierSet(runtime["requires_ansible"])
    oldest = pins("requirements/oldest.txt")["ansible-core"]
    newest = pins("requirements/controller.txt")["ansible-core"]
    assert claimed.contains(oldest) and claimed.contains(newest)
    bottom = [spec.version for spec in claimed if spec.operator == ">="]
    assert bottom and bottom[0].split(".")[:2] == oldest.split(".")[:2]
    for meta in sorted(REPO.glob("roles/*/meta/main.yml")):
        assert str(yaml.safe_load(meta.read_text())["galaxy_info"]["min_ansible_version"]) == ".".join(
            oldest.split(".")[:2]), meta
    # ansible-test wants an ignore file per ansible-core version it runs on: one content for both.
    assert sorted(path.name for path in (REPO / "tests" / "sanity").glob("ignore-*.txt")) == [
        "ignore-%s.txt" % ".".join(version.split(".")[:2]) for version in sorted((oldest, newest))]
