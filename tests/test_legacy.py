"""Nets pickled by old releases load: real files from 2019-2025, and fabricated old state.

Each test names what the installed skorch does without the patch, and a control
runs it: the real corpus fails unpatched as issue 10 describes, on every release
where it does.
"""

import copy
import functools
import io
import json
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import skorch.dataset
import skorch.utils
import torch
from corpus_reference import CORPUS, EXPECTED, corpus_input
from models import TORCH_DEFAULTS_TO_WEIGHTS_ONLY, X, fit, y
from skorch import NeuralNetClassifier

import skorch_loadfix
from skorch_loadfix import legacy, stand_ins
from skorch_loadfix.demo_model import Model
from skorch_loadfix.formats import dumps_state, getstate

# Nets pickled by torch 1.0 keep their modules' source, which torch compares and warns about.
pytestmark = [
    pytest.mark.filterwarnings("ignore::torch.serialization.SourceChangeWarning"),
    pytest.mark.filterwarnings("ignore::skorch.exceptions.DeviceWarning"),
]
FILES = sorted(CORPUS.glob("*.pkl"))
YEARS = {path: path.name.split("-")[1] for path in FILES}
MODES = ["apply", "weights_only_false", "load"]
HAS_CVSPLIT = hasattr(skorch.dataset, "CVSplit")  # skorch <= 0.12
READS_PICKLE_BLOBS = hasattr(skorch.utils, "_TorchLoadUnpickler")  # skorch >= 1.2


def load_as(mode: str, data: bytes):
    """Unpickle ``data`` as a user would in ``mode``."""
    if mode == "load":
        return skorch_loadfix.load(_file(data))
    skorch_loadfix.apply()
    try:
        if mode == "weights_only_false":
            with skorch_loadfix.torch_load_kwargs(weights_only=False):
                return pickle.loads(data)
        return pickle.loads(data)
    finally:
        skorch_loadfix.revert()


def _file(data: bytes) -> io.BytesIO:
    return io.BytesIO(data)


def unpatched_failure(path: Path) -> str | None:
    """What unpatched skorch raises loading ``path`` and predicting, or None if it works."""
    year = YEARS[path]
    if year in ("2019", "2021") and not HAS_CVSPLIT:
        return "Can't get attribute 'CVSplit'"
    if year == "2025" and READS_PICKLE_BLOBS:
        return None
    if TORCH_DEFAULTS_TO_WEIGHTS_ONLY:  # the whole blob goes to a weights-only torch.load
        return "Weights only load failed"
    if year == "2025":  # torch.load of skorch >= 1.2's plain-pickle blob
        return "Invalid magic number"
    if year == "2019":  # torch 1.0 pickled its Adam without `defaults`
        return "defaults"
    return None


def assert_predicts_as_written(net, path: Path) -> None:
    expected = np.array(json.loads(EXPECTED.read_text())[path.name], dtype="float32")
    np.testing.assert_allclose(net.predict_proba(corpus_input()), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(net.predict(corpus_input()), expected.argmax(axis=1))


@pytest.mark.parametrize("path", FILES, ids=YEARS.get)
@pytest.mark.parametrize("mode", MODES)
def test_real_net_loads_and_predicts(path, mode):
    """Each file written by skorch 0.5-1.1 on a CUDA machine predicts what its weights say.

    The expected outputs come from unpatched skorch (tests/corpus_reference.py).
    """
    net = load_as(mode, path.read_bytes())
    assert str(net.device) == "cpu"
    assert_predicts_as_written(net, path)
    assert not net.module_.training


@pytest.mark.parametrize("path", FILES, ids=YEARS.get)
def test_real_net_unpatched_control(path):
    """Without the patch, as issue 10 found: CVSplit, weights-only, torch 1.0's Adam."""
    failure = unpatched_failure(path)
    if failure is None:  # this release reads it itself: then it must predict the same
        assert_predicts_as_written(pickle.loads(path.read_bytes()), path)
        return
    with (
        pytest.raises(Exception, match=failure),
        skorch_loadfix.torch_load_kwargs(weights_only=False),  # ignored unpatched
    ):
        pickle.loads(path.read_bytes()).predict_proba(corpus_input())


def test_real_2019_net_trains_on_and_round_trips(patched):
    """Loaded, the oldest net is a working net of today: fit goes on, pickle round-trips."""
    net = pickle.loads(FILES[0].read_bytes())
    data = np.random.RandomState(1).randn(40, 20).astype("float32")
    net.partial_fit(data, (data[:, 0] > 0).astype("int64"))
    assert net.get_params()["train_split"].__class__ is skorch.dataset.ValidSplit or HAS_CVSPLIT
    again = pickle.loads(pickle.dumps(net))
    np.testing.assert_array_equal(again.predict_proba(data), net.predict_proba(data))
    assert b"skorch_loadfix" not in pickle.dumps(net)  # nothing of ours in what it writes


def test_status_lists_the_translations_and_revert_removes_them():
    skorch_loadfix.apply()
    try:
        text = str(skorch_loadfix.status())
        for old, new in legacy.TRANSLATIONS.items():
            assert f"{old} -> {new}" in text
        assert (skorch.dataset.CVSplit is skorch.dataset.ValidSplit) is not HAS_CVSPLIT
    finally:
        skorch_loadfix.revert()
    assert hasattr(skorch.dataset, "CVSplit") is HAS_CVSPLIT
    assert not hasattr(skorch.utils, "_make_optimizer")
    assert skorch_loadfix.status().translations == ()


def test_every_translation_names_an_object_and_a_missing_or_present_old_name():
    for old, new in legacy.TRANSLATIONS.items():
        module, _, name = new.rpartition(".")
        obj = getattr(__import__(module, fromlist=[name]), name)
        assert f"{obj.__module__}.{obj.__qualname__}" == new, old


def test_gone_module_gets_a_stand_in_in_sys_modules(monkeypatch):
    """Where a whole module is gone, pickle's import finds a stand-in while applied.

    torch 2.13 still ships ``torch.nn.backends.thnn``; here it is taken away, as a
    later torch may. Unpatched, pickle fails with ModuleNotFoundError.
    """
    import torch.nn.backends

    monkeypatch.delitem(sys.modules, "torch.nn.backends.thnn", raising=False)
    monkeypatch.delattr(torch.nn.backends, "thnn", raising=False)
    monkeypatch.setattr(torch.nn.backends, "__path__", [])  # nor can it be imported again
    data = b"\x80\x02ctorch.nn.backends.thnn\n_get_thnn_function_backend\n)R."
    with pytest.raises(ModuleNotFoundError):
        pickle.loads(data)
    skorch_loadfix.apply()
    try:
        assert pickle.loads(data) is None
        assert isinstance(sys.modules["torch.nn.backends.thnn"], types.ModuleType)
    finally:
        skorch_loadfix.revert()
    assert "torch.nn.backends.thnn" not in sys.modules
    assert not hasattr(torch.nn.backends, "thnn")


def old_global(monkeypatch, module, name: str):
    """A function that pickles as ``module.name``, a global this skorch no longer has."""

    def function(*args, **kwargs):
        raise AssertionError("pickled by name, never called")

    function.__module__, function.__qualname__ = module.__name__, name
    monkeypatch.setattr(module, name, function, raising=False)
    return function


def test_skorch_05_filtered_optimizer_loads_and_trains(monkeypatch):
    """skorch 0.5's ``partial(_make_optimizer, ...)`` optimizer: gone since 0.7.

    Unpatched: AttributeError on ``skorch.utils._make_optimizer``. Patched, the
    stand-ins rebuild an SGD over the parameters that require a gradient.
    """
    import skorch.helper

    optimizer = functools.partial(
        old_global(monkeypatch, skorch.utils, "_make_optimizer"),
        optimizer=torch.optim.SGD,
        filter_fn=old_global(monkeypatch, skorch.helper, "filter_requires_grad"),
    )
    data = pickle.dumps(optimizer)
    monkeypatch.undo()
    with pytest.raises(AttributeError, match="_make_optimizer"):
        pickle.loads(data)
    skorch_loadfix.apply()
    try:
        optimizer = pickle.loads(data)
        net = NeuralNetClassifier(Model, optimizer=optimizer, max_epochs=1, verbose=0).fit(X, y)
        assert isinstance(net.optimizer_, torch.optim.SGD)
        frozen = copy.deepcopy(net)  # the optimizer partial survives pickling, while applied
    finally:
        skorch_loadfix.revert()
    assert isinstance(frozen.optimizer_, torch.optim.SGD)


def test_filtered_optimizer_is_refused_where_loads_are_restricted(patched):
    """The stand-in calls whatever it is given: never allowed under weights_only or load()."""
    from skorch_loadfix.safe.policy import Refused, policy

    with pytest.raises(Refused, match="not allowed"):
        policy().entry("skorch.utils", "_make_optimizer", importing=True)
    entry, obj = policy().entry(
        "torch.nn.backends.thnn", "_get_thnn_function_backend", importing=True
    )
    assert obj is stand_ins.no_backend


def test_optimizer_pickled_without_defaults():
    """torch 1.0 pickled an optimizer as ``state`` and ``param_groups`` only.

    Unpatched, today's ``Optimizer.__setstate__`` raises AttributeError on ``defaults``.
    """
    adam = torch.optim.Adam([torch.nn.Parameter(torch.ones(2))], lr=0.5)
    old = {"state": adam.state, "param_groups": adam.param_groups}
    with pytest.raises(AttributeError, match="defaults"):
        torch.optim.Adam.__new__(torch.optim.Adam).__setstate__(dict(old))
    skorch_loadfix.apply()
    try:
        restored = torch.optim.Adam.__new__(torch.optim.Adam)
        restored.__setstate__(dict(old))
    finally:
        skorch_loadfix.revert()
    assert restored.defaults["lr"] == 0.5 and restored.defaults["betas"] == (0.9, 0.999)
    assert restored.param_groups == adam.param_groups


# skorch 0.5.0's __getstate__ (read in its wheel): the blob under the name of the
# attribute list, `history` not yet a property, and none of the attributes below.
ADDED_SINCE_05 = [
    "_modules", "_criteria", "_optimizers", "prefixes_", "_params_to_validate",
    "predict_nonlinearity", "compile", "use_caching", "torch_load_kwargs",
]  # fmt: skip


def skorch_05_pickle(net) -> bytes:
    """What skorch 0.5.0's ``__getstate__`` wrote: only module_ and optimizer_ in the blob."""
    state = dict(vars(net))
    blob = io.BytesIO()
    torch.save({key: state.pop(key) for key in ("module_", "optimizer_")}, blob)
    state[legacy.OLD_BLOB] = blob.getvalue()
    state["history"] = state.pop("history_")
    for name in ADDED_SINCE_05:
        state.pop(name, None)
    return dumps_state(net, state)


def skorch_011_pickle(net, writer) -> bytes:
    """skorch 0.11's ``_kwargs``: the ``__`` parameters with their values."""
    state = getstate(net, writer)
    state["_kwargs"] = {name: getattr(net, name) for name in state.pop("_params_to_validate")}
    return dumps_state(net, state)


def test_skorch_05_state_loads_and_predicts():
    """Unpatched: KeyError on '__cuda_dependent_attributes__' on every release since 0.6."""
    net = fit(criterion__reduction="mean")
    data = skorch_05_pickle(net)
    with pytest.raises(KeyError, match="__cuda_dependent_attributes__"):
        pickle.loads(data)
    skorch_loadfix.apply()
    try:
        old = pickle.loads(data)
    finally:
        skorch_loadfix.revert()
    np.testing.assert_array_equal(old.predict_proba(X), net.predict_proba(X))
    assert (old._modules, old._criteria, old._optimizers) == (
        ["module"],
        ["criterion"],
        ["optimizer"],
    )
    assert old._params_to_validate == {"criterion__reduction"}
    assert old.history_[:, "valid_acc"] == net.history_[:, "valid_acc"]
    defaults = legacy.init_defaults(type(net))  # what this release's constructor says
    assert {name: getattr(old, name) for name in ADDED_SINCE_05 if name in defaults} == {
        name: defaults[name] for name in ADDED_SINCE_05 if name in defaults
    }
    assert "predict_nonlinearity" in defaults
    assert set(old.cuda_dependent_attributes_) == {"module_", "criterion_", "optimizer_"}
    again = pickle.loads(pickle.dumps(old)) if READS_PICKLE_BLOBS else old
    np.testing.assert_array_equal(again.predict_proba(X), net.predict_proba(X))
    old.set_params(criterion__reduction="sum").partial_fit(X, y)


def native_writer():
    return "pickle" if READS_PICKLE_BLOBS else "torch.save"


def test_skorch_011_kwargs(monkeypatch):
    """skorch 0.12-0.15 translated ``_kwargs`` themselves; 1.0 and later do not.

    Unpatched there, ``set_params`` of a ``__`` parameter raises AttributeError on
    ``_params_to_validate``. The control reads the release's own blob format with
    torch's weights-only default switched off, so only ``_kwargs`` is in the way.
    """
    net = fit(criterion__reduction="mean")
    data = skorch_011_pickle(net, native_writer())
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    unpatched = pickle.loads(data)
    if "_kwargs" in unpatched.__dict__:
        with pytest.raises(AttributeError, match="_params_to_validate"):
            unpatched.set_params(criterion__reduction="sum")
    else:  # skorch 0.12-0.15's own translation
        assert unpatched._params_to_validate == {"criterion__reduction"}
    monkeypatch.delenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    skorch_loadfix.apply()
    try:
        loaded = pickle.loads(data)
    finally:
        skorch_loadfix.revert()
    assert "_kwargs" not in loaded.__dict__
    assert loaded._params_to_validate == {"criterion__reduction"}
    assert loaded.criterion__reduction == "mean"
    np.testing.assert_array_equal(loaded.predict_proba(X), net.predict_proba(X))
    loaded.set_params(criterion__reduction="sum").partial_fit(X, y)


def test_kwargs_and_params_to_validate_together_is_a_clear_error(patched):
    net = fit()
    state = getstate(net, "pickle")
    state["_kwargs"] = {}
    with pytest.raises(ValueError, match="_kwargs and skorch >= 0.12's _params_to_validate"):
        pickle.loads(dumps_state(net, state))
