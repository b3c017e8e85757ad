"""A module whose import is the effect: it creates the file ``SKORCH_LOADFIX_MARKER`` names.

What ``antigravity`` would be to an attacker (any importable module's top-level code), made
harmless: a pickled object whose ``__module__`` the file chose imports it when pickled again.
"""

import os
from pathlib import Path

Path(os.environ["SKORCH_LOADFIX_MARKER"]).touch()


def sink(*args: object) -> None:
    """A callable the module offers, as a logger's sink would be."""
