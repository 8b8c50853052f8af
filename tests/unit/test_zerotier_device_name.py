"""zerotier_device_name: the device name zerotier-one gives a network on Linux, checked against names
zerotier-one printed in `zerotier-cli listnetworks` (ZeroTier's own documentation and a user's session)."""
import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.liteboxd.sandbox_network.plugins.filter.zerotier_device_name import FilterModule

zerotier_device_name = FilterModule().filters()["zerotier_device_name"]


@pytest.mark.parametrize("network_id, device", [
    ("8056c2e21c000001", "ztmjfmfyq5"),  # Earth, in ZeroTier's troubleshooting guide
    ("af415e486f35688c", "zt44xgwihd"),  # a private network, from a user's listnetworks output
    ("AF415E486F35688C", "zt44xgwihd"),  # the API's lower case or an inventory's upper case
])
def test_the_name_zerotier_one_printed(network_id, device):
    assert zerotier_device_name(network_id) == device


@pytest.mark.parametrize("network_id", ["", "8056c2e21c00000", "8056c2e21c0000011", "8056c2e21c00000g", None])
def test_anything_but_a_network_id_is_refused(network_id):
    with pytest.raises(AnsibleFilterError, match="is not a ZeroTier network id .16 hexadecimal digits."):
        zerotier_device_name(network_id)
