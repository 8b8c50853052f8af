"""Make the checkout importable as ``ansible_collections.liteboxd.sandbox_network``.

Ansible finds collections by path, so the tests link the checkout into a scratch
``ansible_collections/liteboxd/sandbox_network`` tree outside the repository and put that tree
first on ``sys.path`` and in ``ANSIBLE_COLLECTIONS_PATH`` (for ansible-playbook subprocesses).
"""
import hashlib
import os
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]
CACHE = pathlib.Path(os.environ.get("LITEBOXD_CACHE") or pathlib.Path.home() / ".cache" / "liteboxd")


def collections_root() -> pathlib.Path:
    """Return a directory whose ``ansible_collections/liteboxd/sandbox_network`` is this checkout."""
    root = CACHE / "collections" / hashlib.sha256(str(REPO).encode()).hexdigest()[:12]
    link = root / "ansible_collections" / "liteboxd" / "sandbox_network"
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink() or link.resolve() != REPO:
        tmp = link.with_name(f".sandbox_network.{os.getpid()}")
        tmp.symlink_to(REPO)
        os.replace(tmp, link)
    return root


def install_on_path() -> pathlib.Path:
    root = collections_root()
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    paths = [str(root)] + [p for p in os.environ.get("ANSIBLE_COLLECTIONS_PATH", "").split(":") if p]
    os.environ["ANSIBLE_COLLECTIONS_PATH"] = ":".join(dict.fromkeys(paths))
    return root
