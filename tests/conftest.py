import os
import subprocess
import sys
from pathlib import Path

import pytest

import skorch_loadfix

TESTS = Path(__file__).parent


@pytest.fixture
def patched():
    skorch_loadfix.apply()
    yield
    skorch_loadfix.revert()


@pytest.fixture(autouse=True)
def _never_left_applied():
    yield
    assert not skorch_loadfix.is_applied(), "a test left the patch applied"


def run_python(code: str, *args: str, cwd=None) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter that imports the same skorch as this one."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), *sys.path]))
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=cwd
    )
