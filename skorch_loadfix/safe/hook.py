"""Placeholder for the PEP 578 audit hook another helper writes; the lead swaps it in at merge.

Its API, which the loader already calls: ``guarding(where)`` around every guarded load, and
``resolving()`` around every import the policy does to resolve an allowed name.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def guarding(where: str) -> Iterator[None]:
    yield


@contextmanager
def resolving() -> Iterator[None]:
    yield
