"""Every module's DOCUMENTATION matches its argument_spec() (what validate-modules checks), with the doc
fragments merged as Ansible merges them; every module declares the same attributes (check_mode,
diff_mode, platform) through the collection's attributes fragment; EXAMPLES and RETURN are valid
YAML; and the Kubernetes modules are exactly the `k8s` action group. (That every key a module
returns is in its RETURN is checked on every run in tests/lib/modules.py.)"""
import importlib
import re

import pytest
import yaml

from tests.lib.collection import REPO

PACKAGE = "ansible_collections.liteboxd.sandbox_network.plugins"
COLLECTION = "liteboxd.sandbox_network."
MODULES = sorted(path.stem for path in (REPO / "plugins" / "modules").glob("*.py") if path.stem != "__init__")
COMPARED = ("type", "default", "choices", "elements", "required", "aliases")
SUPPORT = {"full", "partial", "none", "N/A"}


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


def fragment(slug):
    """A fragment named as in extends_documentation_fragment: `ns.coll.name` or `ns.coll.name.variable`."""
    name, variable = (slug[len(COLLECTION):].split(".", 1) + [""])[:2]
    source = importlib.import_module("%s.doc_fragments.%s" % (PACKAGE, name)).ModuleDocFragment
    return yaml.safe_load(getattr(source, variable.upper() or "DOCUMENTATION"))


def documentation(name):
    """The module and its DOCUMENTATION with every fragment's options and attributes merged in; as in
    Ansible's loader, what the module itself says about an option or attribute wins."""
    module = importlib.import_module("%s.modules.%s" % (PACKAGE, name))
    doc = yaml.safe_load(module.DOCUMENTATION)
    for slug in doc.get("extends_documentation_fragment") or []:
        assert slug.startswith(COLLECTION), slug
        for key, entries in fragment(slug).items():
            if key in ("options", "attributes"):
                for entry, value in entries.items():
                    doc.setdefault(key, {})[entry] = dict(value, **doc.get(key, {}).get(entry, {}))
    return module, doc


def test_every_module_is_covered():
    assert len(MODULES) == 10, MODULES


@pytest.mark.parametrize("name", MODULES)
def test_documentation_matches_the_argument_spec(name):
    module, doc = documentation(name)
    assert mismatches(doc["options"], module.argument_spec()) == []
    assert yaml.safe_load(module.EXAMPLES)
    assert yaml.safe_load(module.RETURN)


@pytest.mark.parametrize("name", MODULES)
def test_every_module_declares_check_diff_and_platform_through_the_attributes_fragment(name):
    module, doc = documentation(name)
    raw = yaml.safe_load(module.DOCUMENTATION)
    assert "liteboxd.sandbox_network.attributes" in raw["extends_documentation_fragment"]
    attributes = doc["attributes"]
    assert set(attributes) == {"check_mode", "diff_mode", "platform"}
    for attribute in attributes.values():
        assert attribute["description"] and attribute["support"] in SUPPORT
    assert attributes["platform"]["platforms"] in ("posix", "linux")
    source = (REPO / "plugins" / "modules" / ("%s.py" % name)).read_text()
    # check_mode support is what the module tells AnsibleModule, diff_mode what it returns.
    assert (attributes["check_mode"]["support"] == "full") == ("supports_check_mode=True" in source)
    assert (attributes["diff_mode"]["support"] == "full") == bool(re.search(r"if module\._diff:", source))


def test_the_k8s_action_group_is_exactly_the_modules_with_the_k8s_connection_options():
    """module_defaults for group/liteboxd.sandbox_network.k8s must reach every module that takes
    the shared connection options, and nothing else."""
    with_k8s_auth = {name for name in MODULES
                     if "liteboxd.sandbox_network.k8s_auth" in yaml.safe_load(documentation(name)[0].DOCUMENTATION)
                     .get("extends_documentation_fragment", [])}
    runtime = yaml.safe_load((REPO / "meta" / "runtime.yml").read_text())
    assert {"sandbox", "sandbox_network_policies", "egress_gateway_policy"} <= with_k8s_auth
    assert with_k8s_auth == set(runtime["action_groups"]["k8s"])
