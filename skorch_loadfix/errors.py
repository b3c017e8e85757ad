"""Errors skorch-loadfix raises on its own account."""

from __future__ import annotations

import pickle
from collections.abc import Mapping

# How many refused names the user-facing summary spells out before it counts the rest.
_NAMED_IN_SUMMARY = 3


class UntrustedPickleError(pickle.UnpicklingError):
    """A pickled net needs globals that the load in progress does not allow.

    A subclass of ``pickle.UnpicklingError`` so that code which already handles
    unreadable pickles handles this one too. ``refused`` maps each offending global
    to why it was refused and at which levels of the file it appears. ``str()`` is
    advice for the developer; ``summary`` is one sentence a server can show the person
    who sent the file, naming what was refused but none of the loader's internals.
    """

    def __init__(self, where: str, refused: Mapping[str, str]) -> None:
        self.refused = dict(refused)
        lines = [f"{where}: the pickled net needs globals that are not allowed:"]
        lines += [f"  {name}: {why}" for name, why in sorted(self.refused.items())]
        super().__init__("\n".join([*lines, _FIX]))

    @property
    def summary(self) -> str:
        names = sorted(self.refused)
        shown = ", ".join(names[:_NAMED_IN_SUMMARY])
        more = len(names) - _NAMED_IN_SUMMARY
        listed = f"{shown} and {more} more" if more > 0 else shown
        return (
            f"The file was not loaded: it names objects this application does not allow ({listed})."
        )


_FIX = (
    "Nothing blocked is ever loaded. To allow a class or function you trust, pass it to "
    "skorch_loadfix.load(..., allow=[...]) or register it with "
    "torch.serialization.add_safe_globals([...]); to load a file you trust entirely, use "
    "pickle.load inside skorch_loadfix.torch_load_kwargs(weights_only=False)."
)
