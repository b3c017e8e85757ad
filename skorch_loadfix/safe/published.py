"""Generate ``published.txt``: the classes that public, documented lists name.

Run ``python -m skorch_loadfix.safe.published`` under each installed skorch, scikit-learn and
torch and merge the output into ``published.txt`` (sorted, unique). The loader reads only the
committed table, never this module: the test ``test_policy.py`` checks in every matrix cell
that what this generator finds here is covered by the table, so a new release cannot add a
class silently.

Sources, each a list its project documents as public: ``torch.nn.modules.__all__``,
``torch.optim.__all__`` and ``torch.optim.lr_scheduler.__all__``; scikit-learn's
``all_estimators()`` (the experimental ones enabled) without test modules, and the splitters of
``sklearn.model_selection.__all__`` (search objects keep theirs); skorch's ``__all__`` lists and
its public callback, dataset, history and toy classes. Marked ``constant`` (they may be named and
stored, never called during a load): the functions of ``sklearn.metrics.__all__`` (scorers name
them) and of ``sklearn.feature_selection.__all__`` (score functions); the public functions of
``torch.nn.functional`` and ``torch.nn.init`` (stored activations, an ``Initializer``'s ``fn``);
numpy's scalar types (``numpy.sctypeDict``: stored as values, ``OneHotEncoder(dtype=...)``). A
class that subclasses ``list`` or ``dict`` is marked so, since pickle fills it with APPENDS or
SETITEMS.
"""

from __future__ import annotations

import importlib
import sys
import types
import warnings
from collections.abc import Iterator


def canonical(obj: object) -> str:
    return f"{getattr(obj, '__module__', None)}.{getattr(obj, '__qualname__', None)}"


def _public(module: types.ModuleType) -> Iterator[object]:
    names = getattr(module, "__all__", None)
    if names is None:  # only what the module defines itself, under a public name
        own = vars(module).items()
        names = [n for n, v in own if getattr(v, "__module__", "") == module.__name__]
    for name in names:
        if not name.startswith("_"):
            yield vars(module).get(name)


def _classes() -> Iterator[type]:
    import torch.nn.modules
    import torch.optim
    import torch.optim.lr_scheduler

    for module in (torch.nn.modules, torch.optim, torch.optim.lr_scheduler):
        yield from (obj for obj in _public(module) if isinstance(obj, type))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The experimental estimators, documented as public behind these imports.
        from sklearn.experimental import (  # noqa: F401
            enable_halving_search_cv,
            enable_iterative_imputer,
        )
        from sklearn.utils import all_estimators

        for _, cls in all_estimators():
            if ".tests" not in cls.__module__:
                yield cls
    skorch_modules = (
        "skorch skorch.net skorch.classifier skorch.regressor skorch.callbacks "
        "skorch.dataset skorch.history skorch.probabilistic skorch.helper skorch.toy"
    )
    for name in skorch_modules.split():
        try:
            module = importlib.import_module(name)
        except ImportError:  # skorch.probabilistic needs gpytorch
            continue
        yield from (obj for obj in _public(module) if isinstance(obj, type))


def _functions(module: types.ModuleType) -> Iterator[object]:
    """The public functions ``module`` lists, or (no ``__all__``) binds under a public name:
    its own, and the builtins (torch's kernels) it exports under their own names; not the
    helpers it imports from elsewhere."""
    listed = getattr(module, "__all__", None)
    for name in listed or [n for n in vars(module) if not n.startswith("_")]:
        obj = vars(module).get(name)
        own = isinstance(obj, types.FunctionType) and (
            listed is not None or obj.__module__ == module.__name__
        )
        kernel = isinstance(obj, types.BuiltinFunctionType) and obj.__name__ == name
        if (own and "<locals>" not in obj.__qualname__) or kernel:  # type: ignore[union-attr]
            yield obj


def _constants() -> Iterator[object]:
    import numpy
    import sklearn.feature_selection
    import sklearn.metrics
    import torch.nn.functional
    import torch.nn.init

    for module in (sklearn.metrics, sklearn.feature_selection, torch.nn.functional, torch.nn.init):
        yield from _functions(module)
    yield from set(numpy.sctypeDict.values())


def _splitters() -> Iterator[type]:
    import sklearn.model_selection

    for obj in _public(sklearn.model_selection):
        if isinstance(obj, type) and hasattr(obj, "split") and not hasattr(obj, "fit"):
            yield obj


def lines() -> list[str]:
    found = {f"{canonical(func)} constant" for func in _constants()}
    for cls in [*_classes(), *_splitters()]:
        library = cls.__module__.startswith(("sklearn.", "skorch.", "torch."))
        if library and ".tests" not in cls.__module__:
            container = (
                " list" if issubclass(cls, list) else " dict" if issubclass(cls, dict) else ""
            )
            found.add(f"{canonical(cls)}{container}")
    return sorted(found)


if __name__ == "__main__":
    sys.stdout.write("".join(f"{line}\n" for line in lines()))
