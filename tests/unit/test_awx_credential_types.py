"""The custom credential types in extensions/awx/credential_types/ are what AWX accepts (the rules of
its CredentialTypeInputField / CredentialTypeInjectorField) and inject what the collection reads: the
ZeroTier type's extra variables are the zerotier role's (with the same choices), the kubeconfig
type's environment variable is one the Kubernetes modules fall back to. (That AWX-shaped jobs use
them for real is tests/integration/test_awx_runner.py.)"""
import re

import pytest
import yaml
from jinja2 import meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ansible_collections.liteboxd.sandbox_network.plugins.module_utils import k8s
from tests.lib.collection import REPO

TYPES = sorted((REPO / "extensions" / "awx" / "credential_types").glob("*.yml"))
FIELD_KEYS = {"id", "label", "type", "help_text", "secret", "multiline", "choices", "default", "format",
              "ask_at_runtime"}
# AWX's ENV_BLOCKLIST (awx/main/constants.py) besides the ANSIBLE_ prefix, which it refuses too.
ENV_BLOCKLIST = {"VIRTUAL_ENV", "PATH", "PYTHONPATH", "JOB_ID", "INVENTORY_ID", "INVENTORY_SOURCE_ID",
                 "INVENTORY_UPDATE_ID", "AD_HOC_COMMAND_ID", "REST_API_URL", "REST_API_TOKEN", "MAX_EVENT_RES",
                 "CALLBACK_QUEUE", "CALLBACK_CONNECTION", "CACHE", "JOB_CALLBACK_DEBUG", "INVENTORY_HOSTVARS",
                 "AWX_HOST", "PROJECT_REVISION", "SUPERVISOR_CONFIG_PATH"}


def load(path):
    return yaml.safe_load(path.read_text())


def templates(injectors):
    for kind in ("file", "env", "extra_vars"):
        for key, value in injectors.get(kind, {}).items():
            yield kind, key, value


def test_both_types_are_shipped():
    assert [path.stem for path in TYPES] == ["kubeconfig", "zerotier_api"]


@pytest.mark.parametrize("path", TYPES, ids=lambda path: path.stem)
def test_the_type_is_one_awx_accepts(path):
    credential = load(path)
    assert set(credential) == {"name", "description", "kind", "inputs", "injectors"}
    assert credential["kind"] == "cloud"
    fields = credential["inputs"]["fields"]
    ids = [field["id"] for field in fields]
    assert len(ids) == len(set(ids))
    for field in fields:
        assert set(field) <= FIELD_KEYS and field["label"]
        assert field["type"] in ("string", "boolean")
        if "choices" in field and "default" in field:
            assert field["default"] in field["choices"]
    assert set(credential["inputs"].get("required", [])) <= set(ids)
    injectors = credential["injectors"]
    assert set(injectors) <= {"file", "env", "extra_vars"}
    environment = ImmutableSandboxedEnvironment()
    for kind, key, template in templates(injectors):
        if kind == "file":
            assert re.match(r"^template(\.[a-zA-Z_]+[a-zA-Z0-9_]*)?$", key)
        if kind == "env":
            assert not key.startswith("ANSIBLE_") and key not in ENV_BLOCKLIST
        if kind == "extra_vars":
            assert re.match(r"^[a-zA-Z_]+[a-zA-Z0-9_]*$", key)
        # Every name a template uses is an input, or the files AWX wrote (tower.filename).
        assert meta.find_undeclared_variables(environment.parse(template)) <= set(ids) | {"tower"}
    for secret in (field["id"] for field in fields if field.get("secret")):
        uses = [entry[1] for entry in templates(injectors) if secret in entry[2]]
        assert uses, "secret input %s is injected nowhere" % secret


def test_the_zerotier_type_injects_the_zerotier_role_variables():
    credential = load(REPO / "extensions" / "awx" / "credential_types" / "zerotier_api.yml")
    role_spec = load(REPO / "roles" / "zerotier" / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]
    extra_vars = credential["injectors"]["extra_vars"]
    assert set(extra_vars) == {"zerotier_member_api", "zerotier_member_api_url", "zerotier_member_api_token"}
    assert set(extra_vars) <= set(role_spec)
    api_field = next(field for field in credential["inputs"]["fields"] if field["id"] == "api")
    assert sorted(api_field["choices"]) == sorted(role_spec["zerotier_member_api"]["choices"])


def test_the_kubeconfig_type_sets_a_variable_the_kubernetes_modules_read():
    credential = load(REPO / "extensions" / "awx" / "credential_types" / "kubeconfig.yml")
    fallbacks = {name for option in k8s.AUTH_ARG_SPEC.values() if "fallback" in option
                 for name in option["fallback"][1]}
    assert set(credential["injectors"]["env"]) == {"K8S_AUTH_KUBECONFIG"} <= fallbacks
