"""A pytest plugin (``-p tests.lib.uvloop_loop``): the tests' event loops are uvloop's, the loop the
gateway runs on in production (the gateway tests otherwise run on asyncio's)."""
import asyncio

import uvloop


def pytest_configure(config):  # pylint: disable=unused-argument  # pytest's hook signature
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
