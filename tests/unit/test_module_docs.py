"""DOCUMENTATION of the Kubernetes modules matches their argument_spec (what validate-modules
checks), EXAMPLES and RETURN are valid YAML, and every module is in the `k8s` action group."""
import importlib

import pytest
import yaml

from tests.lib.collection import REPO

PACKAGE = "ansible_collections.liteboxd.sandbox_network.plugins"
MODULES = ("sandbox", "sandbox_network_policies", "egress_gateway_policy")
COMPARED = ("type", "default", "choices", "elements", "required", "aliases")


def normalised(option, key):
    value = option.get(key)
    if key == "type":
        return value or "str"
    if key == "required":
        return bool(value)
    if key == "aliases":
        return value or []
    return value


def mismatches(documented, spec, path=""):
    found = ["%s%s: undocumented" % (path, n) for n in set(spec) - set(documented)]
    found += ["%s%s: not an option" % (path, n) for n in set(documented) - set(spec)]
    for name in set(spec) & set(documented):
        for key in COMPARED:
            if normalised(documented[name], key) != normalised(spec[name], key):
                values = (documented[name].get(key), spec[name].get(key))
                found.append("%s%s.%s: doc %r, spec %r" % ((path, name, key) + values))
        if "options" in spec[name] or "suboptions" in documented[name]:
            found += mismatches(documented[name].get("suboptions", {}), spec[name].get("options", {}),
                                "%s%s." % (path, name))
    return found


@pytest.mark.parametrize("name", MODULES)
def test_documentation_matches_the_argument_spec(name):
    module = importlib.import_module("%s.modules.%s" % (PACKAGE, name))
    fragment = importlib.import_module("%s.doc_fragments.k8s_auth" % PACKAGE).ModuleDocFragment
    doc = yaml.safe_load(module.DOCUMENTATION)
    assert doc["extends_documentation_fragment"] == ["liteboxd.sandbox_network.k8s_auth"]
    options = dict(doc["options"], **yaml.safe_load(fragment.DOCUMENTATION)["options"])
    assert mismatches(options, module.argument_spec()) == []
    assert yaml.safe_load(module.EXAMPLES)
    assert yaml.safe_load(module.RETURN)


def test_the_k8s_action_group_is_exactly_the_modules_with_the_k8s_connection_options():
    """module_defaults for group/liteboxd.sandbox_network.k8s must reach every module that takes
    the shared connection options, and nothing else."""
    with_k8s_auth = set()
    for path in sorted((REPO / "plugins" / "modules").glob("*.py")):
        module = importlib.import_module("%s.modules.%s" % (PACKAGE, path.stem))
        fragments = yaml.safe_load(module.DOCUMENTATION).get("extends_documentation_fragment") or []
        if "liteboxd.sandbox_network.k8s_auth" in fragments:
            with_k8s_auth.add(path.stem)
    runtime = yaml.safe_load((REPO / "meta" / "runtime.yml").read_text())
    assert set(MODULES) <= with_k8s_auth
    assert with_k8s_auth == set(runtime["action_groups"]["k8s"])
