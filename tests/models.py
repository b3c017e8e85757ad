"""Nets the tests pickle: nested custom modules and Adam, as users write them."""

from __future__ import annotations

import inspect
import pickle
import warnings

import numpy as np
import skorch.utils
import torch
from skorch import NeuralNetClassifier
from torch import nn

X = np.random.RandomState(0).rand(32, 4).astype("float32")
y = np.arange(32) % 2
HAS_PARAM = "torch_load_kwargs" in inspect.signature(NeuralNetClassifier.__init__).parameters
TORCH_DEFAULTS_TO_WEIGHTS_ONLY = tuple(map(int, torch.__version__.split(".")[:2])) >= (2, 6)
# skorch >= 1.3 hard-codes weights_only=True; 1.1 and 1.2 follow torch, as the patch does on 1.0.
SKORCH_DEFAULT_WEIGHTS_ONLY = (
    HAS_PARAM and not hasattr(skorch.utils, "get_default_torch_load_kwargs")
) or TORCH_DEFAULTS_TO_WEIGHTS_ONLY


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x):
        return torch.relu(self.linear(x))


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(Block(), Block())
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.body(x))


class Unlisted:
    """A harmless class no allowlist knows."""


class ModelWithUnlisted(Model):
    def __init__(self):
        super().__init__()
        self.extra = Unlisted()


def fit(module=Model, **kwargs):
    net = NeuralNetClassifier(module, optimizer=torch.optim.Adam, max_epochs=2, verbose=0, **kwargs)
    return net.fit(X, y)


def outcome(data: bytes) -> str:
    """How ``pickle.loads(data)`` goes: "ok", "warns" (about weights_only) or "fails"."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            pickle.loads(data)
        except Exception:
            return "fails"
    return "warns" if any("weights_only" in str(w.message) for w in caught) else "ok"
