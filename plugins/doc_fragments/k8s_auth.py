# -*- coding: utf-8 -*-
# Copyright: (c) 2026, LiteBoxd platform team
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Connection options shared by every Kubernetes module of the collection (module_utils/k8s.py)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):

    DOCUMENTATION = r"""
options:
  kubeconfig:
    description:
      - Path to a kubeconfig file.
      - Without O(kubeconfig) and O(host), C($KUBECONFIG) or C(~/.kube/config) is used, and inside a Pod the
        service account.
      - Falls back to the E(K8S_AUTH_KUBECONFIG) environment variable.
    type: path
  context:
    description:
      - The kubeconfig context to use instead of the current one.
      - Falls back to the E(K8S_AUTH_CONTEXT) environment variable.
    type: str
  host:
    description:
      - URL of the Kubernetes API server, for example V(https://10.0.0.1:6443). Overrides the kubeconfig.
      - With O(host) and O(api_key) no kubeconfig is needed.
      - Falls back to the E(K8S_AUTH_HOST) environment variable.
    type: str
  api_key:
    description:
      - Bearer token for the API server. Overrides the kubeconfig user.
      - Falls back to the E(K8S_AUTH_API_KEY) environment variable.
    type: str
  ca_cert:
    description:
      - Path to the CA certificate that signed the API server's certificate.
      - Falls back to the E(K8S_AUTH_SSL_CA_CERT) environment variable.
    type: path
    aliases: [ssl_ca_cert]
  validate_certs:
    description:
      - Whether to verify the API server's TLS certificate. Defaults to what the kubeconfig says (verify).
      - Falls back to the E(K8S_AUTH_VERIFY_SSL) environment variable.
    type: bool
    aliases: [verify_ssl]
  request_timeout:
    description:
      - Seconds to wait for the API server to answer one request.
    type: float
    default: 30.0
notes:
  - All Kubernetes modules of this collection are in the action group C(liteboxd.sandbox_network.k8s), so one
    C(module_defaults) block with C(group/liteboxd.sandbox_network.k8s) sets these options for all of them.
  - Check mode sends every write with server-side dry run (C(dryRun=All)). The API server validates and
    defaults the object and stores nothing.
requirements:
  - kubernetes (Python client) >= 29
"""
