"""Fixtures for the hook tests (the fakes themselves are in hooks_support.py)."""

import sys

import pytest

from hooks_support import HOOKS, FakeAzure, Tools

# The unit tests import the hooks' modules: no __pycache__ in infra/hooks from that.
sys.dont_write_bytecode = True
if str(HOOKS) not in sys.path:
    sys.path.insert(0, str(HOOKS))


@pytest.fixture
def fake():
    """A fake Azure on 127.0.0.1; after the test, every request it got had a route and
    a body ARM would take."""
    server = FakeAzure().start()
    yield server
    server.stop()
    assert not server.unrouted, f"requests the fake had no route for: {server.unrouted}"
    assert not server.refused, f"requests the fake refused for their media type or body: {server.refused}"


@pytest.fixture
def tools(tmp_path):
    """Fake azd and az, first on PATH for the hook."""
    return Tools(tmp_path)
