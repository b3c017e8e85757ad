import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import skorch_loadfix

TESTS = Path(__file__).parent


@pytest.fixture
def patched():
    skorch_loadfix.apply()
    yield
    skorch_loadfix.revert()


@pytest.fixture(params=["audit and guard", "guard alone"])
def line(request, monkeypatch):
    """Both lines of defence, then the unpickler's guard with the audit switched off."""
    from skorch_loadfix import sites
    from skorch_loadfix.safe import verifier

    if request.param == "guard alone":
        monkeypatch.setattr(verifier, "refuse_untrusted", lambda *args: None)
        monkeypatch.setattr(sites, "refuse_untrusted", lambda *args: None)
    return request.param


@pytest.fixture(autouse=True)
def _never_left_applied():
    yield
    assert not skorch_loadfix.is_applied(), "a test left the patch applied"


def run_python(
    code: str, *args: str, python: str = sys.executable, **env: str
) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh ``python`` that imports the same skorch as this one.

    SKORCH_LOADFIX is passed on only when given in ``env``: each run picks its activation.
    """
    environment = {k: v for k, v in os.environ.items() if k != "SKORCH_LOADFIX"}
    environment["PYTHONPATH"] = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    return subprocess.run(
        [python, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        env={**environment, **env},
    )
