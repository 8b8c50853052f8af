"""docs/reference is what scripts/gen-reference.py makes from the modules' documentation and the
roles' argument specs today, and names every module and role: a documentation or argument-spec
change committed without regenerating the reference fails here with the command that fixes it."""
import subprocess
import sys

from tests.lib.collection import REPO

GENERATOR = REPO / "scripts" / "gen-reference.py"
REFERENCE = REPO / "docs" / "reference"


def generate(*arguments):
    return subprocess.run([sys.executable, str(GENERATOR)] + list(arguments), capture_output=True, text=True,
                          check=False, cwd=REPO)


def test_the_committed_reference_is_what_the_generator_makes():
    result = generate("--check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_module_and_role_has_a_page_listed_in_the_index():
    modules = sorted(path.stem for path in (REPO / "plugins" / "modules").glob("*.py") if path.stem != "__init__")
    roles = sorted(path.parent.parent.name for path in (REPO / "roles").glob("*/meta/argument_specs.yml"))
    assert modules and roles
    index = (REFERENCE / "README.md").read_text()
    for kind, names in (("modules", modules), ("roles", roles)):
        assert sorted(path.stem for path in (REFERENCE / kind).glob("*.md")) == names
        for name in names:
            assert "](%s/%s.md)" % (kind, name) in index


def test_check_names_changed_missing_and_orphaned_pages_and_writing_fixes_them(tmp_path):
    output = tmp_path / "reference"
    assert generate("--output", str(output)).returncode == 0
    assert generate("--check", "--output", str(output)).returncode == 0
    (output / "modules" / "sandbox.md").write_text("hand edit\n")
    (output / "roles" / "k3s.md").unlink()
    (output / "modules" / "retired_module.md").write_text("a module that no longer exists\n")

    result = generate("--check", "--output", str(output))

    assert result.returncode == 1
    assert "modules/sandbox.md" in result.stdout
    assert "roles/k3s.md" in result.stdout
    assert "modules/retired_module.md" in result.stdout
    assert "scripts/gen-reference.py" in result.stdout
    assert "roles/gateway.md" not in result.stdout
    assert generate("--output", str(output)).returncode == 0
    assert not (output / "modules" / "retired_module.md").exists()
    assert generate("--check", "--output", str(output)).returncode == 0
