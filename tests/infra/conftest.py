"""Fixtures for the tests in this folder (helpers are in infra_support.py)."""

import shutil

import pytest

from infra_support import ROOT


@pytest.fixture
def infra_copy(tmp_path):
    """A scratch copy of infra/ to break on purpose."""
    target = tmp_path / "infra"
    shutil.copytree(ROOT / "infra", target)
    return target
