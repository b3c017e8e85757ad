"""Harmless successors for functions that old pickled nets name and that are gone.

Each does what the original did, or nothing where nothing uses the result, so a
net written by an old release behaves as it did there. They live here, not in
skorch or torch, and ``skorch_loadfix.legacy.TRANSLATIONS`` points the old names
at them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any


def no_backend() -> None:
    """torch <= 1.x pickled ``_get_thnn_function_backend()`` into every module's ``_backend``.

    Modern ``nn.Module`` never reads ``_backend``; ``None`` is what torch's own
    leftover returns, and it pickles as itself, so a re-saved net names no stub.
    """
    return None


def make_filtered_optimizer(
    pgroups: Any, optimizer: Callable[..., Any], filter_fn: Callable[[Any], Any], **kwargs: Any
) -> Any:
    """skorch 0.5's ``skorch.utils._make_optimizer``: what ``filtered_optimizer`` wrapped.

    A net built with ``optimizer=filtered_optimizer(SGD, filter_requires_grad)`` pickled
    ``partial(_make_optimizer, optimizer=SGD, filter_fn=...)`` as its optimizer.
    """
    return optimizer(filter_fn(pgroups), **kwargs)


def filter_requires_grad(pgroups: Iterable[Any]) -> Iterator[Any]:
    """skorch 0.5's ``skorch.helper.filter_requires_grad``: drop frozen parameters.

    skorch 0.5 passed parameter groups (dicts); later releases may pass the
    parameters themselves, so both are filtered the same way.
    """
    for pgroup in pgroups:
        if isinstance(pgroup, dict):
            kept = {key: value for key, value in pgroup.items() if key != "params"}
            kept["params"] = [p for p in pgroup["params"] if _requires_grad(p)]
            yield kept
        elif _requires_grad(pgroup):
            yield pgroup


def _requires_grad(param: Any) -> bool:
    # (name, parameter) pairs from named_parameters(), or the parameter itself
    tensor = param[1] if isinstance(param, tuple) else param
    return bool(tensor.requires_grad)
