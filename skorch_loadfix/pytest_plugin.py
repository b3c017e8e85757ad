"""The pytest plugin: a ``skorch_loadfix`` fixture, and ``--skorch-loadfix`` for a whole session.

Registered through the ``pytest11`` entry point; ``-p no:skorch_loadfix`` turns it
off, and ``-p skorch_loadfix`` loads it when ``PYTEST_DISABLE_PLUGIN_AUTOLOAD=1`` keeps
entry points from loading. Importing it imports neither skorch nor torch.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .patching import activate, is_applied, revert, status
from .status import Status

_applied_for_session = pytest.StashKey[bool]()


def pytest_addoption(parser: pytest.Parser) -> None:
    help = "apply skorch-loadfix for the whole session, before collection"
    parser.addoption("--skorch-loadfix", action="store_true", help=help)
    parser.addini("skorch_loadfix", type="bool", default=False, help=help)


def pytest_configure(config: pytest.Config) -> None:
    wanted = config.getoption("skorch_loadfix") or config.getini("skorch_loadfix")
    config.stash[_applied_for_session] = bool(wanted) and not is_applied()
    if config.stash[_applied_for_session]:
        activate("pytest --skorch-loadfix")


def pytest_unconfigure(config: pytest.Config) -> None:
    if config.stash.get(_applied_for_session, False):
        revert()


@pytest.fixture(name="skorch_loadfix")
def skorch_loadfix_fixture() -> Iterator[Status]:
    """Apply the patch for one test; at teardown revert only what this fixture applied."""
    applied_here = not is_applied()
    if applied_here:
        activate("pytest fixture")
    try:
        yield status()
    finally:
        if applied_here:
            revert()
