"""Make every ``torch.load`` an installed skorch does honour ``torch_load_kwargs``.

>>> import skorch_loadfix
>>> skorch_loadfix.apply()  # doctest: +SKIP

and load pickled nets you don't trust with every global checked at every level:

>>> net = skorch_loadfix.load("net.pkl", allow=[MyModule])  # doctest: +SKIP
"""

from __future__ import annotations

from .errors import UntrustedPickleError
from .load_kwargs import load_onto, torch_load_kwargs
from .patching import apply, is_applied, revert, status
from .status import CallSite, Status
from .untrusted import load, post_load_effects, untrusted_globals

__all__ = [
    "CallSite",
    "Status",
    "UntrustedPickleError",
    "apply",
    "is_applied",
    "load",
    "load_onto",
    "post_load_effects",
    "revert",
    "status",
    "torch_load_kwargs",
    "untrusted_globals",
]
