"""Fixtures for the tests in this folder (helpers are in static_support.py)."""

import shutil

import pytest

from static_support import ROOT


@pytest.fixture
def copy_of(tmp_path):
    """copy_of("path") copies a file or folder of the repository into a scratch place,
    keeping its relative path, and returns the copy."""

    def make(relative):
        source, target = ROOT / relative, tmp_path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)
        return target

    return make
