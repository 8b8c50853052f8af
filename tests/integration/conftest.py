"""Fixtures of the ZeroTier tests: a network's controller and a node, two daemons of the stub."""
import pytest

from tests.lib.zerotier_stub import controller_and_node

ZEROTIER_NWID = "8056c2e21c000001"
ZEROTIER_NODE = "0deadbeef1"


@pytest.fixture
def make_world(tmp_path):
    """``make_world(**timings)``: the controller of ZEROTIER_NWID and the node ZEROTIER_NODE on short
    timings, each with its home holding ``authtoken.secret`` as zerotier-one writes it
    (``world.controller_home``, ``world.node_home``)."""
    worlds = []

    def make(**timings):
        world = controller_and_node(ZEROTIER_NWID, ZEROTIER_NODE, **timings)
        worlds.append(world)
        for name, daemon in (("node", world.node), ("controller", world.controller)):
            home = tmp_path / ("%s-%d" % (name, len(worlds)))
            home.mkdir()
            (home / "authtoken.secret").write_text(daemon.token)
            setattr(world, name + "_home", home)
        return world

    yield make
    for world in worlds:
        world.stop()


@pytest.fixture
def world(make_world):
    return make_world()
