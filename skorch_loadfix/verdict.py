"""Whether this skorch/torch pair needs the patch, measured rather than looked up.

The status command pickles a tiny net in both blob formats and unpickles each in this
process, in whatever state the process is (patched by ``SKORCH_LOADFIX=1`` or not), so
the verdict is what a user's own load would do here, not a table of version numbers.
"""

from __future__ import annotations

import pickle
import warnings
from dataclasses import dataclass
from typing import Literal

from .formats import BLOB, WRITERS, Writer, dumps

Outcome = Literal["loads", "warns", "fails"]
WRITTEN_BY: dict[Writer, str] = {"torch.save": "skorch <= 1.1", "pickle": "skorch >= 1.2"}
_DOES: dict[Outcome, str] = {
    "loads": "loads",
    "warns": "warns (FutureWarning) unpickling",
    "fails": "cannot unpickle",
}


@dataclass(frozen=True)
class Verdict:
    patched_by: str | None
    own: Writer
    outcomes: dict[Writer, Outcome]

    @property
    def line(self) -> str:
        state = f"patched by {self.patched_by}" if self.patched_by else "unpatched"
        other = next(writer for writer in WRITERS if writer != self.own)
        mine, theirs = self.outcomes[self.own], self.outcomes[other]
        those = f"those written by {WRITTEN_BY[other]}"
        if mine != theirs:
            also = f", but {_DOES[theirs]} {those}"
        else:
            also = f" (nor {those})" if mine == "fails" else f", and {those}"
        return f"{state}, this skorch {_DOES[mine]} its own nets on this torch{also}"

    @property
    def next_step(self) -> str:
        if all(outcome == "loads" for outcome in self.outcomes.values()):
            return (
                "Next step: nothing to fix for files you trust. For files you don't, use "
                "skorch_loadfix.load(); `python -m skorch_loadfix inspect FILE` reports on one."
            )
        if self.patched_by:
            return "Next step: this is a bug in skorch-loadfix; please report it with this output."
        return (
            "Next step: call skorch_loadfix.apply() in your code, or set SKORCH_LOADFIX=1 for "
            "every process; `python -m skorch_loadfix demo` shows the fix on this pair."
        )


def measure(patched_by: str | None) -> Verdict:
    """Pickle a tiny initialized net both ways and unpickle each as this process would."""
    import torch
    from skorch import NeuralNetRegressor

    net = NeuralNetRegressor(
        torch.nn.Linear, module__in_features=1, module__out_features=1, verbose=0
    ).initialize()
    own: Writer = "torch.save" if net.__getstate__()[BLOB].startswith(b"PK") else "pickle"
    return Verdict(patched_by, own, {writer: _unpickle(dumps(net, writer)) for writer in WRITERS})


def _unpickle(data: bytes) -> Outcome:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            pickle.loads(data)
        except Exception:  # what fails is the verdict; the demo shows each error
            return "fails"
    return "warns" if any("weights_only" in str(w.message) for w in caught) else "loads"
