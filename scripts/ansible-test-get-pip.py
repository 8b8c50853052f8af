"""Stand-in for get-pip.py, which ansible-test downloads from a host that is unreachable here.

ansible-test runs it as __main__ inside a fresh sanity virtualenv with pip-install arguments (the
pinned pip version and options). The standard library's ensurepip provides a pip to start from;
the pinned pip then comes from PyPI, as get-pip.py would install it.
"""
import ensurepip
import os
import subprocess
import sys

GET_PIP_ONLY = {"--no-setuptools", "--no-wheel"}

ensurepip.bootstrap(upgrade=True)
args = [arg for arg in sys.argv[1:] if arg not in GET_PIP_ONLY]
# ansible-test runs this with an emptied environment; keep the machine's CA bundle for PyPI.
system_cas = "/etc/ssl/certs/ca-certificates.crt"
if os.path.exists(system_cas):
    args = ["--cert", system_cas] + args
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", "--upgrade"] + args, cwd="/"))
