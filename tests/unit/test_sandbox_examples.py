"""Every example and task that creates a sandbox registers its result under no_log: the result holds
the access token (module EXAMPLES, the guides' YAML blocks, the roles' tasks)."""
import re

import pytest
import yaml

from tests.lib.collection import REPO

MODULE = "liteboxd.sandbox_network.sandbox"


def yaml_sources():
    """(where, parsed YAML) of every place that may hold a sandbox task."""
    from ansible_collections.liteboxd.sandbox_network.plugins.modules import sandbox

    yield "plugins/modules/sandbox.py EXAMPLES", yaml.safe_load(sandbox.EXAMPLES)
    for path in sorted(REPO.glob("roles/*/tasks/*.yml")) + sorted(REPO.glob("playbooks/*.yml")):
        yield str(path.relative_to(REPO)), yaml.safe_load(path.read_text())
    for path in [REPO / "README.md"] + sorted(REPO.glob("docs/*.md")) + sorted(REPO.glob("roles/*/README.md")):
        for index, block in enumerate(re.findall(r"```yaml\n(.*?)```", path.read_text(), re.S)):
            yield f"{path.relative_to(REPO)} yaml block {index}", yaml.safe_load(block)


def sandbox_tasks(node):
    """The tasks (dicts) that call the sandbox module, anywhere in a parsed document."""
    if isinstance(node, dict):
        if MODULE in node:
            yield node
        for value in node.values():
            yield from sandbox_tasks(value)
    elif isinstance(node, list):
        for item in node:
            yield from sandbox_tasks(item)


def creating_tasks():
    found = []
    for where, document in yaml_sources():
        for task in sandbox_tasks(document):
            args = task.get(MODULE) or {}
            if args.get("state", "present") != "absent":
                found.append(pytest.param(task, id=f"{where}: {task.get('name', args.get('name'))}"))
    return found


@pytest.mark.parametrize("task", creating_tasks())
def test_a_created_sandbox_is_registered_under_no_log(task):
    assert task.get("no_log") is True, "the result holds the access token: set no_log: true on this task"


def test_the_examples_were_found():
    assert len(creating_tasks()) >= 5
