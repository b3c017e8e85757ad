"""Nets trained on a GPU load on a CPU (issue 18), whatever holds their tensors.

No GPU is needed: a file "written on a GPU" is made by having torch's ``location_tag``
answer ``cuda:0`` while pickling, so that every storage says so, in the outer pickle, the
blob (all three formats) and the tensor streams, as a GPU machine writes them. Each
callback of ``skorch.callbacks`` that keeps tensors, and each scheduler of
``torch.optim.lr_scheduler`` through ``LRScheduler``, is loaded in every mode; a control
shows the unpatched failure wherever there is one.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import cloudpickle
import joblib
import numpy as np
import pytest
import skorch.callbacks
import torch
import torch.optim.lr_scheduler as schedulers
from conftest import run_python
from models import X, y
from skorch import NeuralNetClassifier
from skorch.exceptions import DeviceWarning

import skorch_loadfix
from skorch_loadfix.__main__ import main
from skorch_loadfix.demo_model import Block, Model
from skorch_loadfix.formats import BLOB, dumps, dumps_state, getstate
from skorch_loadfix.upgrade import Options, upgrade_file

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
UNAVAILABLE = "Attempting to deserialize object on a CUDA device"


# How skorch <= 1.1 reads its own nets on torch >= 2.6 without the patch (whose
# __setstate__ passes no weights_only): so that an unpatched read fails for the device alone.
SKORCH_ALONE = {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}


@contextmanager
def skorch_alone() -> Iterator[None]:
    with mock.patch.dict(os.environ, SKORCH_ALONE):
        yield


@contextmanager
def saved_on(location: str = "cuda:0") -> Iterator[None]:
    """Pickle as a machine with ``location`` does: every storage is tagged with it."""
    with mock.patch.object(torch.serialization, "location_tag", lambda storage: location):
        yield


# Schedulers that take more than an optimizer and keyword arguments are built by a
# function, which LRScheduler calls as it calls a scheduler class.
def _decay(epoch: int) -> float:
    return 0.9**epoch


def _sequential(optimizer: Any, **kwargs: Any) -> Any:
    parts = [schedulers.ConstantLR(optimizer), schedulers.ExponentialLR(optimizer, gamma=0.9)]
    return schedulers.SequentialLR(optimizer, parts, milestones=[1])


def _chained(optimizer: Any, **kwargs: Any) -> Any:
    parts = [schedulers.ConstantLR(optimizer), schedulers.ExponentialLR(optimizer, gamma=0.9)]
    return schedulers.ChainedScheduler(parts)


# What load() needs besides its allowlist: the demo's module, the functions above, and a
# function torch's CyclicLR pickles by name (torch >= 2.2), which load() does not list.
ALLOW = [Model, Block, _decay, _sequential, _chained]
ALLOW += ["torch.optim.lr_scheduler.CyclicLR._triangular_scale_fn"]
ALLOW_NAMES = tuple(n if isinstance(n, str) else f"{n.__module__}.{n.__qualname__}" for n in ALLOW)
SCHEDULER_ARGS: dict[str, dict[str, Any]] = {
    "LambdaLR": {"lr_lambda": _decay},
    "MultiplicativeLR": {"lr_lambda": _decay},
    "StepLR": {"step_size": 1},
    "MultiStepLR": {"milestones": [1]},
    "ConstantLR": {},
    "LinearLR": {},
    "ExponentialLR": {"gamma": 0.9},
    "SequentialLR": {"policy": _sequential},
    "CosineAnnealingLR": {"T_max": 2},
    "ChainedScheduler": {"policy": _chained},
    "ReduceLROnPlateau": {},
    "CyclicLR": {"base_lr": 0.001, "max_lr": 0.01, "cycle_momentum": False},
    "CosineAnnealingWarmRestarts": {"T_0": 1},
    "OneCycleLR": {"max_lr": 0.01, "total_steps": 100},
    "PolynomialLR": {},
}
# Every scheduler this torch has: one it adds fails test_every_scheduler_is_covered.
TORCH_SCHEDULERS = [name for name in schedulers.__all__ if name != "LRScheduler"]


@dataclass(frozen=True)
class Case:
    """A fitted net as a user has it: ``leaks`` whether it holds tensors outside its blob."""

    callbacks: Callable[[], list[Any]] = list
    after_fit: Callable[[Any], None] = lambda net: None
    leaks: bool = True
    net_kwargs: dict[str, Any] = field(default_factory=dict)


def _scheduler(name: str) -> Case:
    kwargs = dict(SCHEDULER_ARGS.get(name, {}))
    policy = kwargs.pop("policy", getattr(schedulers, name, name))
    return Case(lambda: [skorch.callbacks.LRScheduler(policy=policy, **kwargs)])


def _cached_scores(net: Any) -> None:
    """The scoring cache as ``Checkpoint(f_pickle=...)`` pickles it at ``on_epoch_end``."""
    scoring = dict(net.callbacks_)["valid_acc"]
    scoring.y_trues_ = [torch.as_tensor(y[:8])]
    scoring.y_preds_ = [net.infer(torch.as_tensor(X[:8])).detach()]


def _tensor_attribute(net: Any) -> None:
    net.class_weight_ = torch.ones(2)


# Checkpoint writes these into the working directory by default: here, nothing.
CHECKPOINT_FILES = ["f_params", "f_optimizer", "f_criterion", "f_history"]
CASES: dict[str, Case] = {
    "plain": Case(leaks=False),
    "EarlyStopping(load_best=True)": Case(
        lambda: [skorch.callbacks.EarlyStopping(load_best=True, patience=1)], leaks=False
    ),
    "Checkpoint": Case(
        lambda: [skorch.callbacks.Checkpoint(**dict.fromkeys(CHECKPOINT_FILES))],
        leaks=False,
    ),
    "EpochScoring cache": Case(after_fit=_cached_scores),
    "custom tensor attribute": Case(after_fit=_tensor_attribute),
    "LRScheduler(WarmRestartLR)": _scheduler("WarmRestartLR"),
    **{f"LRScheduler({name})": _scheduler(name) for name in TORCH_SCHEDULERS},
}
LEAKING = [name for name, case in CASES.items() if case.leaks]


@dataclass
class Fitted:
    net: Any
    expected: np.ndarray


_fitted: dict[str, Fitted] = {}


def fitted(name: str) -> Fitted:
    """One fit per case and process: every mode reads the same net."""
    if name not in _fitted:
        case = CASES[name]
        net = NeuralNetClassifier(
            Model,
            optimizer=torch.optim.Adam,
            max_epochs=2,
            verbose=0,
            callbacks=case.callbacks(),
            **case.net_kwargs,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net.fit(X, y)
        case.after_fit(net)
        _fitted[name] = Fitted(net, net.predict_proba(X))
    return _fitted[name]


@contextmanager
def on_gpu(net: Any) -> Iterator[None]:
    """``net`` as a GPU machine pickles it: ``device='cuda'``, every storage ``cuda:0``."""
    net.device = "cuda"
    try:
        with saved_on("cuda:0"):
            yield
    finally:
        net.device = "cpu"


def gpu_pickle(net: Any, blob: str = "own") -> bytes:
    """``pickle.dumps(net)`` on a GPU, with the blob as the installed skorch writes it, as
    skorch <= 1.1 (a torch.save zip) or >= 1.2 (a pickle) does, or as torch < 1.6 did."""
    if blob == "legacy":
        state = getstate(net, "pickle")
        stream = io.BytesIO()
        with on_gpu(net):
            torch.save(pickle.loads(state[BLOB]), stream, _use_new_zipfile_serialization=False)
            state[BLOB], state["device"] = stream.getvalue(), "cuda"
            return dumps_state(net, state)
    with on_gpu(net):
        return pickle.dumps(net) if blob == "own" else dumps(net, blob)  # type: ignore[arg-type]


# Each mode: how the file is written on the GPU machine, and how it is read here.
def _patched(read: Callable[[bytes], Any], **options: Any) -> Callable[[bytes], Any]:
    def reader(data: bytes) -> Any:
        skorch_loadfix.apply(**options)
        try:
            return read(data)
        finally:
            skorch_loadfix.revert()

    return reader


def _upgraded(data: bytes, folder: Path) -> Any:
    source, target = folder / "gpu.pkl", folder / "upgraded.pkl"
    source.write_bytes(data)
    upgrade_file(source, target, Options(allow=ALLOW_NAMES, force=True))
    with skorch_alone():
        return pickle.loads(target.read_bytes())  # the upgraded file, read by skorch alone


def _joblib_dump(net: Any) -> bytes:
    file = io.BytesIO()
    joblib.dump(net, file)
    return file.getvalue()


WRITE: dict[str, Callable[[Any], bytes]] = {
    "joblib.load": _joblib_dump,
    "cloudpickle": cloudpickle.dumps,
}
READ: dict[str, Callable[[bytes, Path], Any]] = {
    "unpatched": lambda data, _: pickle.loads(data),
    "apply()": lambda data, _: _patched(pickle.loads)(data),
    "strict": lambda data, _: _patched(pickle.loads, strict=True)(data),
    "load()": lambda data, _: skorch_loadfix.load(io.BytesIO(data), allow=ALLOW),
    "joblib.load": lambda data, _: _patched(lambda d: joblib.load(io.BytesIO(d)))(data),
    "cloudpickle": lambda data, _: _patched(cloudpickle.loads)(data),
    "upgrade": _upgraded,
}
MODES = list(READ)


def written(name: str, mode: str, *, gpu: bool = True) -> bytes:
    """The file ``mode`` reads, written on a GPU machine (or, ``gpu`` False, on this one)."""
    net = fitted(name).net
    write = WRITE.get(mode, pickle.dumps)
    if not gpu:
        return write(net)
    with on_gpu(net):
        return write(net)


UNPICKLABLE = "cannot be pickled on this torch"  # torch < 2.2's CyclicLR holds a WeakMethod


def outcome(name: str, mode: str, folder: Path, *, gpu: bool = True) -> str:
    """ "loads" (and predicts as the CPU original, on the CPU), or the error's first line."""
    try:
        data = written(name, mode, gpu=gpu)
    except TypeError as error:
        return f"{UNPICKLABLE}: {error}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net = READ[mode](data, folder)
    except Exception as error:
        return f"{type(error).__name__}: {str(error).splitlines()[0]}"
    assert str(net.device) == "cpu"
    assert all(p.device.type == "cpu" for p in net.module_.parameters())
    np.testing.assert_allclose(net.predict_proba(X), fitted(name).expected, rtol=1e-6)
    return "loads"


def picklable(names: Iterable[str]) -> list[str]:
    """The nets this torch pickles unpatched: no machine writes the others."""
    found = []
    for name in names:
        try:
            pickle.dumps(fitted(name).net)
        except TypeError:
            continue
        found.append(name)
    return found


def skip_if_unpicklable(found: str) -> None:
    if found.startswith(UNPICKLABLE):
        pytest.skip(found)  # no machine writes it: nothing to load


# What the same net written on a CPU meets in these modes, devices aside: load()'s allowlist
# (older torch pickles some schedulers' bound methods through getattr), and the CyclicLR
# that load() builds with the staticmethod object torch's class keeps (safe/policy.py
# resolves names through vars()), which upgrade then cannot pickle again.
NOT_ABOUT_DEVICES = {
    "load()": ("UntrustedPickleError",),
    "upgrade": ("UpgradeError: load() refuses", "TypeError: cannot pickle 'staticmethod'"),
}


def test_every_scheduler_is_covered():
    assert set(SCHEDULER_ARGS) == set(TORCH_SCHEDULERS)


@pytest.mark.parametrize("name", CASES)
def test_unpatched_fails_exactly_where_tensors_leave_the_blob(name, tmp_path):
    """The control: skorch maps its blob, and torch reads the rest before skorch is asked."""
    got = outcome(name, "unpatched", tmp_path)
    skip_if_unpicklable(got)
    if CASES[name].leaks:
        assert got.startswith("RuntimeError") and UNAVAILABLE in got
    else:  # a net with nothing outside its blob fails only where skorch fails on any net
        assert got == "loads" or UNAVAILABLE not in got


@pytest.mark.parametrize("mode", [m for m in MODES if m != "unpatched"])
@pytest.mark.parametrize("name", CASES)
def test_patched_loads_on_the_cpu(name, mode, tmp_path):
    """As the same net written on a CPU does: it loads, but where the mode refuses it for
    something else than its device (``NOT_ABOUT_DEVICES``)."""
    on_cpu = outcome(name, mode, tmp_path, gpu=False)
    skip_if_unpicklable(on_cpu)
    assert outcome(name, mode, tmp_path) == on_cpu
    assert on_cpu == "loads" or on_cpu.startswith(NOT_ABOUT_DEVICES.get(mode, ())), on_cpu


@pytest.mark.parametrize("blob", ["torch.save", "pickle", "legacy"])
@pytest.mark.parametrize("name", ["plain", "LRScheduler(StepLR)", "custom tensor attribute"])
def test_every_blob_format(name, blob, tmp_path):
    """A blob as skorch <= 1.1, skorch >= 1.2 or torch < 1.6 wrote it, each read patched."""
    net, expected = fitted(name).net, fitted(name).expected
    data = gpu_pickle(net, blob)
    assert b"cuda:0" in data
    for mode in ("apply()", "strict", "load()"):
        with pytest.warns(DeviceWarning):
            loaded = READ[mode](data, tmp_path)
        assert str(loaded.device) == "cpu"
        np.testing.assert_allclose(loaded.predict_proba(X), expected, rtol=1e-6)


def test_the_outer_pickle_warns_and_names_the_switch():
    data = gpu_pickle(fitted("LRScheduler(StepLR)").net)
    skorch_loadfix.apply()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            net = pickle.loads(data)
    finally:
        skorch_loadfix.revert()
    outer = [w for w in caught if "remap_devices" in str(w.message)]
    assert outer and all(w.category is DeviceWarning for w in outer)
    assert "cuda:0" in str(outer[0].message) and "'cpu'" in str(outer[0].message)
    optimizer = dict(net.callbacks_)["LRScheduler"].lr_scheduler_.optimizer  # outside the blob
    assert {t.device.type for t in _tensors_of(optimizer)} == {"cpu"}


def test_remap_devices_false_switches_it_off(monkeypatch):
    data = gpu_pickle(fitted("LRScheduler(StepLR)").net)
    skorch_loadfix.apply(remap_devices=False)
    try:
        with pytest.raises(RuntimeError, match=UNAVAILABLE):
            pickle.loads(data)
    finally:
        skorch_loadfix.revert()
    import _skorch_loadfix_pth

    monkeypatch.setenv(_skorch_loadfix_pth.OPTIONS_VARIABLE, '{"remap_devices": false}')
    _skorch_loadfix_pth._apply("SKORCH_LOADFIX=1")
    try:
        with pytest.raises(RuntimeError, match=UNAVAILABLE):
            pickle.loads(data)
    finally:
        skorch_loadfix.revert()
    with pytest.raises(TypeError, match="remap_devices must be True or False"):
        skorch_loadfix.apply(remap_devices="no")  # type: ignore[arg-type]


def test_a_load_that_works_today_is_unchanged(patched):
    """On a device that is here, torch's own load runs, once, and nothing is remapped."""
    tensor = torch.arange(6.0).reshape(2, 3)[:, 1:]  # a view: offset, strides
    data = pickle.dumps(tensor)
    skorch_loadfix.revert()
    unpatched = pickle.dumps(tensor)
    skorch_loadfix.apply()
    assert data == unpatched  # written by name, as unpatched torch writes it
    with mock.patch("torch.load", wraps=torch.load) as spy, warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = pickle.loads(data)
    assert spy.call_count == 1 and "map_location" not in spy.call_args.kwargs
    assert torch.equal(loaded, tensor) and loaded.stride() == tensor.stride()


def test_other_errors_are_torchs_own(patched):
    """A storage that fails for another reason fails as it does unpatched: a bad magic number."""
    from torch.serialization import MAGIC_NUMBER

    magic = MAGIC_NUMBER.to_bytes(10, "little")
    good = pickle.dumps(torch.ones(3))
    broken = good.replace(magic, bytes(10), 1)
    assert broken != good
    skorch_loadfix.revert()
    with pytest.raises(RuntimeError) as unpatched:
        pickle.loads(broken)
    skorch_loadfix.apply()
    with pytest.raises(RuntimeError) as patched_error:
        pickle.loads(broken)
    assert str(patched_error.value) == str(unpatched.value)


def test_a_missing_mps_falls_back_to_the_cpu(tmp_path):
    """skorch falls back only from CUDA: a net saved on mps fails unpatched even in its blob."""
    net, expected = fitted("plain").net, fitted("plain").expected
    net.device = "mps"
    try:
        with saved_on("mps"):
            data = pickle.dumps(net)
    finally:
        net.device = "cpu"
    with pytest.raises(RuntimeError, match="mps"), skorch_alone():
        pickle.loads(data)
    for mode in ("apply()", "strict", "load()"):
        with pytest.warns(DeviceWarning, match="mps"):
            loaded = READ[mode](data, tmp_path)
        assert str(loaded.device) == "cpu"
        np.testing.assert_allclose(loaded.predict_proba(X), expected, rtol=1e-6)


def _tensors_of(optimizer: Any) -> list[torch.Tensor]:
    found = [t for state in optimizer.state.values() for t in state.values()]
    assert found, "the optimizer holds no state"
    return [t for t in found if isinstance(t, torch.Tensor)]


def _tensors(net: Any) -> list[torch.Tensor]:
    """Every tensor of a net's module, its scheduler's optimizer and a custom attribute."""
    optimizer = dict(net.callbacks_)["lr_scheduler"].lr_scheduler_.optimizer
    return [*net.module_.parameters(), *_tensors_of(optimizer), net.class_weight_]


@pytest.fixture(scope="module")
def cpu_net_with_everything():
    """A CPU net with tensors at every level: module, scheduler's optimizer, attribute."""
    net = NeuralNetClassifier(
        Model,
        optimizer=torch.optim.Adam,
        max_epochs=1,
        verbose=0,
        callbacks=[("lr_scheduler", skorch.callbacks.LRScheduler(schedulers.StepLR, step_size=1))],
    ).fit(X, y)
    _tensor_attribute(net)
    return net


@pytest.mark.parametrize("mode", ["apply()", "strict", "load()"])
def test_load_onto_moves_every_level(cpu_net_with_everything, mode, tmp_path):
    """``meta`` is here on every machine, so the override shows on a CPU-only one too."""
    data = pickle.dumps(cpu_net_with_everything)
    if mode == "load()":
        net = skorch_loadfix.load(io.BytesIO(data), allow=ALLOW, device="meta")
    else:
        with skorch_loadfix.load_onto("meta"):
            net = READ[mode](data, tmp_path)
    assert net.device == "meta"
    assert {t.device.type for t in _tensors(net)} == {"meta"}
    with skorch_alone():
        unpatched = pickle.loads(data)
    assert {t.device.type for t in _tensors(unpatched)} == {"cpu"}  # the control


def test_load_onto_a_missing_device_falls_back_to_the_cpu(patched):
    skorch_loadfix.revert()  # written as a GPU machine does unpatched: tensors outside the blob
    data = gpu_pickle(fitted("LRScheduler(StepLR)").net)
    skorch_loadfix.apply()
    with pytest.warns(DeviceWarning) as caught, skorch_loadfix.load_onto("mps"):
        net = pickle.loads(data)
    assert str(net.device) == "cpu"
    messages = [str(w.message) for w in caught]
    assert any("load_onto()" in m and "'mps'" in m for m in messages)  # the outer pickle's
    assert any("(mps) is not available" in m for m in messages)  # skorch's own, for the net


def test_load_onto_refuses_what_is_no_device():
    match = r"load_onto\(\): 'gpu0' is not a device.*'cuda:1'"
    with pytest.raises(ValueError, match=match), skorch_loadfix.load_onto("gpu0"):
        pass


def test_load_onto_is_per_context(patched):
    data = pickle.dumps(fitted("plain").net)
    with skorch_loadfix.load_onto("meta"):
        assert pickle.loads(data).device == "meta"
    assert pickle.loads(data).device == "cpu"


def test_upgrade_device(tmp_path, capsys):
    """``upgrade --device cpu``: no fallback from the GPU, so none of skorch's warnings."""
    source, target = tmp_path / "gpu.pkl", tmp_path / "cpu.pkl"
    source.write_bytes(gpu_pickle(fitted("LRScheduler(StepLR)").net))
    names = [f"--allow={name}" for name in ALLOW_NAMES]
    with pytest.warns(DeviceWarning):  # the control: the file's cuda, mapped by fallback
        assert main(["upgrade", str(source), str(target), *names]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeviceWarning)
        assert main(["upgrade", str(source), str(target), "--force", "--device=cpu", *names]) == 0
    with skorch_alone():
        assert pickle.loads(target.read_bytes()).device == "cpu"
    assert main(["upgrade", str(source), str(target), "--device=gpu0"]) == 2
    assert "--device: 'gpu0' is not a device" in capsys.readouterr().err


def test_the_issues_pipeline_in_joblib(tmp_path):
    """Issue 18's third row: a Pipeline holding a net with an LRScheduler, joblib-dumped."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    net = NeuralNetClassifier(
        Model,
        optimizer=torch.optim.Adam,
        max_epochs=2,
        verbose=0,
        callbacks=[skorch.callbacks.LRScheduler(schedulers.StepLR, step_size=1)],
    )
    pipeline = make_pipeline(StandardScaler(), net).fit(X, y)
    expected = pipeline.predict_proba(X)
    path = tmp_path / "pipeline.joblib"
    with on_gpu(net):
        joblib.dump(pipeline, path)
    with pytest.raises(RuntimeError, match=UNAVAILABLE):
        joblib.load(path)
    skorch_loadfix.apply()
    try:
        loaded = joblib.load(path)
    finally:
        skorch_loadfix.revert()
    np.testing.assert_allclose(loaded.predict_proba(X), expected, rtol=1e-6)


# The write side: PR #1150's __getstate__, and the same for every callback that needs it.
READ_ELSEWHERE = """
    import json, pickle, sys
    from pathlib import Path
    import numpy as np, torch
    folder, activation = Path(sys.argv[1]), sys.argv[2]
    assert not torch.cuda.is_available()
    found = {}
    for path in sorted(folder.glob("*.pkl")):
        arrays = np.load(path.with_suffix(".npz"))
        try:
            net = pickle.loads(path.read_bytes())
            same = np.allclose(net.predict_proba(arrays["X"]), arrays["expected"], rtol=1e-6)
            found[path.stem] = "loads" if same else "predicts otherwise"
        except Exception as error:
            found[path.stem] = f"{type(error).__name__}: {str(error).splitlines()[0]}"
    import skorch.net  # the files name skorch_loadfix.demo_model: the patch is what counts
    patched = hasattr(skorch.net.NeuralNet.__setstate__, "__wrapped__")
    assert patched == bool(activation)
    if activation:
        assert sys.modules["skorch_loadfix"].status().activated_by == activation
    print(json.dumps(found))
"""


def read_elsewhere(files: dict[str, bytes], folder: Path, **env: str) -> dict[str, str]:
    """How a fresh CPU-only interpreter reads each file: unpatched, unless ``env`` says."""
    folder.mkdir()
    for index, (name, data) in enumerate(files.items()):
        (folder / f"{index}.pkl").write_bytes(data)
        np.savez(folder / f"{index}.npz", X=X, expected=fitted(name).expected)
    activation = "SKORCH_LOADFIX=1" if env.get("SKORCH_LOADFIX") == "1" else ""
    done = run_python(READ_ELSEWHERE, str(folder), activation, **env)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    return {name: found[str(index)] for index, name in enumerate(files)}


def test_written_under_the_patch_loads_with_unpatched_skorch(tmp_path):
    """A GPU machine that pickles under the patch writes files a CPU reads unpatched."""
    unpatched = {name: gpu_pickle(fitted(name).net) for name in picklable(CASES)}
    skorch_loadfix.apply()
    try:
        patched = {name: gpu_pickle(fitted(name).net) for name in CASES}
    finally:
        skorch_loadfix.revert()
    before = read_elsewhere(unpatched, tmp_path / "before", **SKORCH_ALONE)
    after = read_elsewhere(patched, tmp_path / "after", **SKORCH_ALONE)
    for name in picklable(LEAKING):
        assert UNAVAILABLE in before[name]  # the control
    for name in CASES:
        if name == "custom tensor attribute":  # the user's own: only the read side helps
            assert UNAVAILABLE in after[name]
        else:
            assert after[name] == "loads", name


def test_pr_1150_patch_is_listed_and_reverted():
    owners = [skorch.callbacks.LRScheduler, skorch.callbacks.EpochScoring]
    assert not any("__getstate__" in vars(owner) for owner in owners)
    skorch_loadfix.apply()
    try:
        sites = {site.name for site in skorch_loadfix.status().sites}
        assert {f"{owner.__name__}.__getstate__" for owner in owners} <= sites
        assert "torch.storage._load_from_bytes" in sites
        assert all("__getstate__" in vars(owner) for owner in owners)
    finally:
        skorch_loadfix.revert()
    assert not any("__getstate__" in vars(owner) for owner in owners)
    assert not hasattr(torch.storage._load_from_bytes, "__wrapped__")


def test_a_skorch_with_its_own_getstate_keeps_it(monkeypatch):
    def own(self):
        return dict(vars(self), marker=True)

    monkeypatch.setattr(skorch.callbacks.LRScheduler, "__getstate__", own, raising=False)
    skorch_loadfix.apply()
    try:
        names = [site.name for site in skorch_loadfix.status().sites]
        assert "LRScheduler.__getstate__" not in names
        assert skorch.callbacks.LRScheduler.__getstate__ is own
    finally:
        skorch_loadfix.revert()
    assert skorch.callbacks.LRScheduler.__getstate__ is own


def test_training_resumes_after_the_scheduler_is_dropped(patched):
    net = pickle.loads(pickle.dumps(fitted("LRScheduler(StepLR)").net))
    assert dict(net.callbacks_)["LRScheduler"].lr_scheduler_ is None
    net.partial_fit(X, y)
    scheduler = dict(net.callbacks_)["LRScheduler"].lr_scheduler_
    assert scheduler.optimizer is net.optimizer_ and scheduler.last_epoch == len(net.history)


def test_skorch_loadfix_1_in_a_fresh_process(tmp_path):
    files = {name: gpu_pickle(fitted(name).net) for name in picklable(LEAKING)}
    found = read_elsewhere(files, tmp_path / "files", SKORCH_LOADFIX="1")
    assert found == dict.fromkeys(files, "loads")


def table(folder: Path) -> str:
    """The table per callback x mode of the issue's closing note: ``python test_devices.py``.

    Two more columns: a fresh process with ``SKORCH_LOADFIX=1``, and a file pickled under
    the patch, read by skorch alone in a fresh process.
    """
    columns = {mode: {name: outcome(name, mode, folder) for name in CASES} for mode in MODES}
    files = {name: gpu_pickle(fitted(name).net) for name in picklable(CASES)}
    columns["SKORCH_LOADFIX=1"] = read_elsewhere(files, folder / "env", SKORCH_LOADFIX="1")
    skorch_loadfix.apply()
    try:
        files = {name: gpu_pickle(fitted(name).net) for name in CASES}
    finally:
        skorch_loadfix.revert()
    columns["written patched, read alone"] = read_elsewhere(files, folder / "w", **SKORCH_ALONE)
    lines = ["| net | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name in CASES:
        cells = [column.get(name, UNPICKLABLE).split(":")[0] for column in columns.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    import tempfile

    import test_devices  # its functions pickled by the name the fresh processes import

    with tempfile.TemporaryDirectory() as folder:
        print(test_devices.table(Path(folder)))
