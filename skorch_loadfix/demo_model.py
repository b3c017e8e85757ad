"""The module the demo's net is made of: nested custom blocks, as users write them.

A real module, not demo-local code, so that the pickles the demo writes name an
importable class in every interpreter that loads them.
"""

import numpy as np
import torch
from torch import nn

X = np.random.RandomState(0).rand(32, 4).astype("float32")
y = np.arange(32) % 2


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.linear(x))


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(Block(), Block())
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))  # type: ignore[no-any-return]
