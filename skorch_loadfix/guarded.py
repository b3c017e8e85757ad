"""The unpickler ``load()`` reads a whole file with: one policy for every global.

The pure-Python unpickler, so that BUILD of a net can be taken over:
``NeuralNet.__setstate__`` (patched or not) would read the blob with the file's own
kwargs; here the net's state is restored under the same policy as the rest.
"""

from __future__ import annotations

import pickle
from typing import IO, Any

import skorch.net
from skorch.net import NeuralNet

from .allowlist import Policy
from .blob import Reader, restore
from .inspection import OUTER
from .unpickling import Unpickler


class GuardedUnpickler(Unpickler):
    dispatch = dict(Unpickler.dispatch)

    def __init__(self, file: IO[bytes], trusted: Policy, where: str) -> None:
        super().__init__(file)
        self._reader = Reader(None, {"weights_only": True}, where, trusted)

    def find_class(self, module: str, name: str) -> Any:
        return self._reader.resolve(module, name, OUTER)

    def _build(self) -> None:
        net = self.stack[-2]
        if not isinstance(net, NeuralNet):
            return Unpickler.load_build(self)  # type: ignore[attr-defined,no-any-return]
        owner = next(cls for cls in type(net).__mro__ if "__setstate__" in vars(cls))
        if owner is not NeuralNet:
            raise pickle.UnpicklingError(
                f"{self._reader.where}: {owner.__qualname__} overrides __setstate__, which load() "
                "cannot guard; load the file with pickle.load after "
                "skorch_loadfix.apply(strict=True) if you trust its outer pickle"
            )
        reader, state = self._reader, self.stack.pop()
        restore(skorch.net, net, state, {"weights_only": True}, reader.where, reader.policy)

    dispatch[pickle.BUILD[0]] = _build
