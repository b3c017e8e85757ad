"""Nets the tests pickle: nested custom modules and Adam, as users write them."""

from __future__ import annotations

import inspect
import pickle
import warnings

import pytest
import skorch.utils
import torch
from skorch import NeuralNet, NeuralNetClassifier

from skorch_loadfix.demo_model import Model, X, y

HAS_PARAM = "torch_load_kwargs" in inspect.signature(NeuralNet.__init__).parameters
TORCH = tuple(map(int, torch.__version__.split(".")[:2]))
TORCH_DEFAULTS_TO_WEIGHTS_ONLY = TORCH >= (2, 6)
# torch 2.4 and 2.5 warn when a load does not say weights_only; older ones load silently.
TORCH_WARNS_WITHOUT_WEIGHTS_ONLY = (2, 4) <= TORCH < (2, 6)
# torch's safe-globals registry (add_safe_globals from 2.4, the safe_globals block from 2.5):
# before it there is nothing a user can register, so nothing for the allowlist to read.
needs_safe_globals = pytest.mark.skipif(
    not hasattr(torch.serialization, "safe_globals"), reason="torch < 2.5 has no safe_globals"
)
# skorch >= 1.3 hard-codes weights_only=True; 1.1 and 1.2 follow torch, as the patch does on 1.0.
SKORCH_DEFAULT_WEIGHTS_ONLY = (
    HAS_PARAM and not hasattr(skorch.utils, "get_default_torch_load_kwargs")
) or TORCH_DEFAULTS_TO_WEIGHTS_ONLY


class Unlisted:
    """A harmless class no allowlist knows."""


class ModelWithUnlisted(Model):
    def __init__(self):
        super().__init__()
        self.extra = Unlisted()


def fit(module=Model, **kwargs):
    net = NeuralNetClassifier(module, optimizer=torch.optim.Adam, max_epochs=2, verbose=0, **kwargs)
    return net.fit(X, y)


def loads_recording(data: bytes) -> tuple[bool, list[warnings.WarningMessage]]:
    """``pickle.loads(data)``: whether it loaded, and every warning it raised on the way."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            pickle.loads(data)
        except Exception:
            return False, caught
    return True, caught


def outcome(data: bytes) -> str:
    """How ``pickle.loads(data)`` goes: "ok", "warns" (about weights_only) or "fails"."""
    loaded, caught = loads_recording(data)
    if not loaded:
        return "fails"
    return "warns" if any("weights_only" in str(w.message) for w in caught) else "ok"


def load_and_predict(data: bytes):
    """What a worker does with a pickled net it was sent."""
    return pickle.loads(data).predict_proba(X)


class ModelWithFunction(Model):
    def __init__(self):
        super().__init__()
        self.extra = len  # builtins.len: harmless, and no weights-only allowlist has it
