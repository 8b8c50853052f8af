"""Session-wide test setup: the collection import path and the real Kubernetes API server."""
from tests.lib.collection import install_on_path

install_on_path()

pytest_plugins = ["tests.lib.apiserver"]
