"""load(), untrusted_globals() and apply(strict=True): attack payloads at every level, and
the legit nets that must still load. Every payload is harmless: it would create a marker."""

import bz2
import contextlib
import copyreg
import functools
import gzip
import io
import os
import pickle
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import payloads as payload_module
import pytest
import skorch
import torch
import torchscript_payload
from models import X, fit, y
from packaging.version import Version
from payloads import (
    BLOB_LEVEL,
    EXT_CODE,
    OUTER,
    TENSORS,
    Payload,
    _Stream,
    marker_code,
    payloads,
    placed,
)
from sklearn.metrics import accuracy_score, make_scorer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from skorch import NeuralNetClassifier, NeuralNetRegressor
from skorch.callbacks import Checkpoint, EarlyStopping, EpochScoring, LRScheduler

import skorch_loadfix
from skorch_loadfix import UntrustedPickleError
from skorch_loadfix.demo_model import Block, Model
from skorch_loadfix.formats import BLOB, WRITERS, dumps, dumps_state
from skorch_loadfix.safe import memoryfile, verifier

LEVELS = (OUTER, BLOB_LEVEL, TENSORS)


@pytest.fixture(scope="module")
def marker_folder(tmp_path_factory):
    return tmp_path_factory.mktemp("payloads")


def clear(marker: Path) -> None:
    shutil.rmtree(marker, ignore_errors=True)  # venv.create makes it a folder
    marker.unlink(missing_ok=True)


@pytest.fixture
def marker(marker_folder):
    """Where a payload that ran leaves its mark: absent when a test starts."""
    marker = marker_folder / "marker"
    (marker_folder / "script.py").write_text(marker_code(marker))
    clear(marker)
    yield marker
    clear(marker)


@pytest.fixture(scope="module")
def net():
    return fit()


@functools.cache
def families(marker: Path) -> dict[str, Payload]:
    return {p.family: p for p in payloads(marker)}


def payload_file(marker, net, family, level, **state):
    payload = families(marker)[family]
    return payload, placed(payload.data, level, net, {**net.__getstate__(), **state})


@contextlib.contextmanager
def registered(payload: Payload):
    """EXT1's extension code, for its own payload only: with any code registered, every
    guarded read takes the pure-Python unpickler."""
    if payload.family != "EXT1":
        yield
        return
    copyreg.add_extension("os", "system", EXT_CODE)
    try:
        yield
    finally:
        copyreg.remove_extension("os", "system", EXT_CODE)


def outcomes(marker, net, level, load, *, only=lambda payload: True) -> dict[str, str]:
    """What ``load(data)`` did with each payload placed at ``level``: "refused" (naming the
    payload's global, at the right level), "loaded" or the error, and ", and it ran".
    ``only``: which payloads; ``safe_to_run`` those that may run here (no network, no browser)."""
    state, found = net.__getstate__(), {}
    for payload in families(marker).values():
        if level not in payload.levels or not only(payload):
            continue
        data = placed(payload.data, level, net, state)
        try:
            with registered(payload):
                load(data)
            outcome = "loaded"
        except UntrustedPickleError as error:
            where = f"in the {payload.level_refused(level)}"
            named = where in error.refused.get(payload.refused_as(level), "")
            outcome = "refused" if named else f"refused {error.refused}"
        except Exception as error:  # what a payload that ran leaves behind is rarely a net
            outcome = f"{type(error).__name__}: {error}"
        if marker.exists():
            outcome += ", and it ran"
            clear(marker)
        found[payload.family] = outcome
    return found


def safe_to_run(payload: Payload) -> bool:
    return payload.hits


def torch_saved(payload: Payload) -> bool:
    return verifier.is_torch_save(payload.data)


def not_refused(found: dict[str, str]) -> dict[str, str]:
    return {family: outcome for family, outcome in found.items() if outcome != "refused"}


def assert_refused(error, payload, level):
    refused = payload.refused_as(level)
    assert refused in error.value.refused, str(error.value)
    assert f"in the {payload.level_refused(level)}" in error.value.refused[refused]


@pytest.mark.parametrize("level", LEVELS)
def test_load_refuses_every_payload_at_every_level(marker, net, line, level):
    def load(data):
        skorch_loadfix.load(io.BytesIO(data), allow=[Model, Block])

    assert not_refused(outcomes(marker, net, level, load)) == {}


@pytest.mark.parametrize("level", [BLOB_LEVEL, TENSORS])
def test_strict_refuses_every_nested_payload(marker, net, line, level):
    skorch_loadfix.apply(strict=True)
    try:
        with skorch_loadfix.torch_load_kwargs(weights_only=True):
            found = outcomes(marker, net, level, pickle.loads)
    finally:
        skorch_loadfix.revert()
    assert not_refused(found) == {}


@pytest.mark.parametrize("level", [BLOB_LEVEL, TENSORS])
def test_weights_only_restricts_where_skorch_would(marker, net, level):
    """apply() with weights_only=True, not strict, restricts what a torch.load of skorch's
    would: a torch.save blob (skorch <= 1.1 torch.loads it) by ours, tensor streams by torch's
    own weights-only unpickler. A plain-pickle blob is read by pickle, as skorch 1.2-1.4 read
    it, so its payloads run: apply() changes nothing skorch accepts (strict and load() are
    the guards, above)."""
    restricted = torch_saved if level == BLOB_LEVEL else (lambda payload: True)

    def unrestricted(payload):
        return payload.hits and not restricted(payload)

    skorch_loadfix.apply()
    try:
        with skorch_loadfix.torch_load_kwargs(weights_only=True):
            found = outcomes(marker, net, level, pickle.loads, only=restricted)
            pickled = outcomes(marker, net, level, pickle.loads, only=unrestricted)
    finally:
        skorch_loadfix.revert()
    if Version(skorch.__version__) >= Version("1.3"):  # the control: unpatched, weights_only=True

        def gist(found):  # torch words its refusal by whether weights_only was passed
            return {f: o if o.endswith("it ran") else o.split(":")[0] for f, o in found.items()}

        unpatched = outcomes(marker, net, level, pickle.loads, only=unrestricted)
        assert gist(unpatched) == gist(pickled)
    torchs = ("UnpicklingError: Weights only load", "RuntimeError: Cannot use ``weights_only=True")
    found = {  # still nothing ran
        family: "refused" if outcome.startswith(torchs) and "it ran" not in outcome else outcome
        for family, outcome in found.items()
    }
    if level == TENSORS:  # a record torch never reads: torch loads the stream, as unpatched
        assert found.pop("a record torch.save never writes") == "loaded"
    assert not_refused(found) == {}
    assert len(found) >= 5  # the torch.save blobs, at least
    # what skorch 1.2-1.4 do: every payload runs but those that reach torch.load as a stream
    unlike_skorch = {f: o for f, o in pickled.items() if not o.endswith("it ran")}
    assert {f for f, o in unlike_skorch.items() if not o.startswith(torchs)} == set()
    assert (len(pickled) > 10) == (level == BLOB_LEVEL)


@pytest.mark.parametrize("level", LEVELS)
def test_every_payload_runs_when_loaded_unguarded(marker, net, level):
    """The control: each payload is live, so the refusals above are what stop it."""
    skorch_loadfix.apply()
    try:
        with skorch_loadfix.torch_load_kwargs(weights_only=False):
            found = outcomes(marker, net, level, pickle.loads, only=safe_to_run)
    finally:
        skorch_loadfix.revert()
    ran = {family for family, outcome in found.items() if outcome.endswith("and it ran")}
    assert ran == {p.family for p in families(marker).values() if p.hits and level in p.levels}


TORCHSCRIPT = "TorchScript archive: torch.load dispatches it to torch.jit.load"


@pytest.mark.parametrize("level", [BLOB_LEVEL, TENSORS])
def test_torchscript_archive_runs_only_unguarded(marker, net, level):
    """TorchScript writes no marker: it overwrites an existing file, in C++."""
    victim = payload_module.victim(marker)
    victim.write_bytes(b"victim")
    _, data = payload_file(marker, net, TORCHSCRIPT, level)
    guarded = {
        "load()": lambda: skorch_loadfix.load(io.BytesIO(data), allow=[Model, Block]),
        "strict": lambda: load_with(data, strict=True, weights_only=True),
        "weights_only": lambda: load_with(data, strict=False, weights_only=True),
    }
    for name, load in guarded.items():
        with pytest.raises((UntrustedPickleError, RuntimeError)):
            load()
        assert victim.read_bytes() == b"victim", name
    with warnings.catch_warnings(), contextlib.suppress(Exception):
        warnings.simplefilter("ignore")  # torch's "dispatching to torch.jit.load"
        load_with(data, strict=False, weights_only=False)
    assert victim.read_bytes().startswith(torchscript_payload.WRITTEN)  # the control


def load_with(data: bytes, *, strict: bool, weights_only: bool):
    skorch_loadfix.apply(strict=strict)
    try:
        with skorch_loadfix.torch_load_kwargs(weights_only=weights_only):
            return pickle.loads(data)
    finally:
        skorch_loadfix.revert()


def test_a_file_cannot_loosen_its_own_loading(marker, net):
    payload, data = payload_file(
        marker, net, "__reduce__ protocol 4", BLOB_LEVEL, torch_load_kwargs={"weights_only": False}
    )
    with pytest.raises(UntrustedPickleError) as error:
        skorch_loadfix.load(io.BytesIO(data))
    assert_refused(error, payload, BLOB_LEVEL)
    skorch_loadfix.apply(strict=True)
    try:
        assert "applied by apply(), strict" in str(skorch_loadfix.status())
        with pytest.raises(UntrustedPickleError):
            pickle.loads(data)
        assert not marker.exists()
        skorch_loadfix.apply()  # not strict: the file's own kwargs count, and it runs
        assert not skorch_loadfix.status().strict
        with contextlib.suppress(Exception):  # what a payload leaves behind is rarely a net
            pickle.loads(data)
    finally:
        skorch_loadfix.revert()
    assert marker.exists()


def test_strict_cannot_guard_the_outer_pickle(marker, net):
    """Documented: the outer level is the caller's own pickle.load; load() is the answer."""
    _, data = payload_file(marker, net, "__reduce__ protocol 4", OUTER)
    skorch_loadfix.apply(strict=True)
    try:
        pickle.loads(data)
    finally:
        skorch_loadfix.revert()
    assert marker.exists()


def test_blocklist_wins_over_allow_and_safe_globals(marker, net):
    with pytest.raises(ValueError, match="posix.system is on the hard blocklist"):
        skorch_loadfix.load(io.BytesIO(b""), allow=[os.system])
    payload, data = payload_file(marker, net, "__reduce__ protocol 4", BLOB_LEVEL)
    with torch.serialization.safe_globals([os.system]), pytest.raises(UntrustedPickleError):
        skorch_loadfix.load(io.BytesIO(data))
    assert not marker.exists()


def test_untrusted_globals_lists_without_running(marker, net):
    _, data = payload_file(marker, net, "getattr(__import__('os'), 'system')", TENSORS)
    found = skorch_loadfix.untrusted_globals(io.BytesIO(data))
    assert set(found) == {
        "builtins.__import__",  # getattr binds a table class's own methods: see test_widened
        "skorch_loadfix.demo_model.Model",
        "a stream in the tensor streams",  # the payload is a pickle, not a torch.save stream
    }
    assert "in the tensor streams" in found["builtins.__import__"]
    assert not marker.exists()
    legit = io.BytesIO(pickle.dumps(net))
    assert skorch_loadfix.untrusted_globals(legit, allow=[Model, Block]) == {}


# -- No false blocks --------------------------------------------------------------------------


def assert_same_net(loaded, net, X=X, y=y):
    np.testing.assert_array_equal(loaded.predict_proba(X), net.predict_proba(X))
    loaded.partial_fit(X, y)  # tensors stay ordinary: the optimizer steps on them


@pytest.mark.parametrize("writer", ["native", *WRITERS])
def test_load_allows_own_module_classes(net, tmp_path, writer):
    data = pickle.dumps(net) if writer == "native" else dumps(net, writer)
    path = tmp_path / "net.pkl"
    path.write_bytes(data)
    assert_same_net(
        skorch_loadfix.load(path, allow=[Model, "skorch_loadfix.demo_model.Block"]), net
    )
    with torch.serialization.safe_globals([Model, Block]):
        assert_same_net(skorch_loadfix.load(str(path)), net)
    with pytest.raises(UntrustedPickleError, match="demo_model.Block"):
        skorch_loadfix.load(path, allow=[Model])


def mapped(path: Path) -> bool:
    return str(path) in Path("/proc/self/maps").read_text()


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads Linux's /proc")
@pytest.mark.parametrize("writer", WRITERS)
def test_load_copies_the_tensors_out_of_the_mapped_file(tmp_path, writer):
    """load() maps a file on disk instead of reading it, so the tensors must be copies: the
    file rewritten afterwards changes nothing, and the map is gone once load() returns."""
    big = NeuralNetRegressor(  # a blob above IN_PLACE_FROM, read in place
        torch.nn.Linear, module__in_features=1024, module__out_features=512
    ).initialize()
    path = tmp_path / "net.pkl"
    path.write_bytes(b"head" + dumps(big, writer))
    with open(path, "rb") as file:
        assert file.read(4) == b"head"  # load() reads from where the file stands
        loaded = skorch_loadfix.load(file)
        assert file.read() == b""  # and consumes it, as pickle.load would
    assert not mapped(path)
    with open(path, "r+b") as file:
        file.write(b"\0" * path.stat().st_size)
    torch.testing.assert_close(loaded.module_.weight, big.module_.weight, rtol=0, atol=0)
    assert loaded.module_.weight.untyped_storage().nbytes() == 1024 * 512 * 4
    with open(path, "wb") as file:  # the control: the map is there while a view lives
        file.write(dumps(big, writer))
    with open(path, "rb") as file:
        view = skorch_loadfix.untrusted._mapped(file)
        assert view is not None and mapped(path)
        del view
    assert not mapped(path)


@pytest.mark.parametrize("writer", WRITERS)
def test_guarded_levels_never_reach_torch_load(net, tmp_path, monkeypatch, writer):
    """torch.load reads the bytes again to choose its reader, and a zip with TorchScript goes
    to torch.jit.load: a mapped file changed between our checks and that read (a red team
    won the race) would run code. Guarded levels call torch's two readers directly."""
    path = tmp_path / "net.pkl"
    path.write_bytes(dumps(net, writer))
    calls = []
    monkeypatch.setattr(torch, "load", lambda *args, **kwargs: calls.append("torch.load"))
    monkeypatch.setattr(torch.jit, "load", lambda *args, **kwargs: calls.append("jit.load"))
    assert_same_net(skorch_loadfix.load(path, allow=[Model, Block]), net)
    assert_same_net(load_with(path.read_bytes(), strict=True, weights_only=True), net)
    assert calls == []
    with contextlib.suppress(Exception):  # the control: weights_only=False is upstream's way
        load_with(path.read_bytes(), strict=False, weights_only=False)
    assert calls


def in_place(*after: bytes) -> bytes:
    """A dict whose blob key holds bytes (read in place), then ``after``."""
    data = b"\0" * 64
    key = BLOB.encode()
    start = b"\x80\x02}\x8c" + bytes([len(key)]) + key
    return start + b"B" + len(data).to_bytes(4, "little") + data + b"q\x00s" + b"".join(after)


@pytest.mark.parametrize("kept", ["under the blob's key of a dict", "and in the memo, elsewhere"])
def test_bytes_read_in_place_are_never_kept(tmp_path, line, kept):
    """Views of the mapped file are for skorch's reader to consume (a net's restore pops its
    blob: the tests above load nets from files); one kept would alias the file (a later write
    changes the loaded object) and keep it mapped."""
    data = in_place(b"." if kept.startswith("under") else b"\x8c\x04kepth\x00s.")
    path = tmp_path / "blob.pkl"
    path.write_bytes(data)
    if line == "audit and guard":
        assert verifier.KEPT_VIEW in skorch_loadfix.untrusted_globals(path)
    with pytest.raises(UntrustedPickleError, match=verifier.KEPT_VIEW):
        skorch_loadfix.load(path)
    assert not mapped(path)
    assert pickle.loads(data)[BLOB] == b"\0" * 64  # the control: plain bytes, unguarded


def test_audit_and_loader_agree_on_what_a_tensor_stream_is(tmp_path):
    """Found by a red team, both ways the audit once said {} and load() refused."""
    stream = b"ctorch.storage\n_load_from_bytes\n"
    raw = b"\0" * 8
    files = {
        "a stream named twice, its first copy reused": b"\x80\x02"
        + stream
        + b"q\x00"
        + stream
        + b"0B"
        + len(raw).to_bytes(4, "little")
        + raw
        + b"q\x010"
        + b"0cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85h\x01\x87R.",
        "a stream of a tensor, not a storage": pickle.dumps(_TensorStream(), 2),
    }
    for name, data in files.items():
        path = tmp_path / "file.pkl"
        path.write_bytes(data)
        assert skorch_loadfix.untrusted_globals(path), name
        with pytest.raises(UntrustedPickleError):
            skorch_loadfix.load(path)


class _TensorStream:
    def __reduce__(self):
        file = io.BytesIO()
        torch.save(torch.zeros(2), file)
        return torch.storage._load_from_bytes, (file.getvalue(),)


def test_a_view_kept_in_a_nets_own_lists_is_refused(net, tmp_path, line):
    """restore() pops only the blob: a view appended to the net's list of cuda-dependent
    attributes (through the memo) would stay, so the audit walks that list too."""
    body = pickle.dumps(net, protocol=3)
    name = b"X\x0a\x00\x00\x00optimizer_"  # in cuda_dependent_attributes_, a list
    at = body.index(name, body.index(b"cuda_dependent_attributes_")) + len(name)
    assert body[at : at + 1] == b"q"  # BINPUT: after it, append what the memo holds at 99999
    body = body[: at + 2] + b"j" + (99999).to_bytes(4, "little") + body[at + 2 :]
    memoized = in_place()[:-3] + b"r" + (99999).to_bytes(4, "little") + b"s0"  # dict, popped
    path = tmp_path / "net.pkl"
    path.write_bytes(memoized + body[2:])
    if line == "audit and guard":
        assert verifier.KEPT_VIEW in skorch_loadfix.untrusted_globals(path, allow=[Model, Block])
    with pytest.raises(UntrustedPickleError, match=verifier.KEPT_VIEW):
        skorch_loadfix.load(path, allow=[Model, Block])


def test_an_old_stream_must_fill_every_storage_it_names(line):
    """torch's old-format reader fills only the storages the stream's last pickle lists, and
    returns the others uninitialized: whatever memory they got."""
    file = io.BytesIO()
    torch.save(
        torch.zeros(64, dtype=torch.uint8).storage(),  # as a tensor stream holds one
        file,
        _use_new_zipfile_serialization=False,
    )
    stream = io.BytesIO(file.getvalue())
    for _ in range(4):  # magic number, protocol, sys_info, the object
        unpickler = pickle.Unpickler(stream)
        unpickler.persistent_load = lambda pid: None
        unpickler.load()
    emptied = file.getvalue()[: stream.tell()] + pickle.dumps([], 2)  # no key, no data
    data = pickle.dumps(_Stream(emptied), 2)
    if line == "audit and guard":
        assert "a storage the stream never fills" in skorch_loadfix.untrusted_globals(
            io.BytesIO(data)
        )
    with pytest.raises(UntrustedPickleError, match="a storage the stream never fills"):
        skorch_loadfix.load(io.BytesIO(data))
    assert pickle.loads(data).nbytes() == 64  # the control: unguarded, 64 bytes never written


def test_nets_pickled_at_protocol_5_load():
    """Protocol 5 (Python 3.14's default, joblib's, cloudpickle's) pickles numpy arrays, such
    as a classifier's classes_, through numpy's _frombuffer."""
    fitted = classifier().fit(X, y)
    data = pickle.dumps(fitted, protocol=5)
    assert b"_frombuffer" in data
    assert skorch_loadfix.untrusted_globals(io.BytesIO(data)) == {}
    assert_same_net(skorch_loadfix.load(io.BytesIO(data)), fitted)


@pytest.mark.parametrize("opener", [gzip.open, bz2.open])
def test_compressed_file_objects_are_read_not_mapped(net, tmp_path, opener):
    path = tmp_path / "net.pkl.z"
    with opener(path, "wb") as file:
        file.write(pickle.dumps(net))
    with opener(path, "rb") as file:
        assert_same_net(skorch_loadfix.load(file, allow=[Model, Block]), net)


def rss_file_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    raise KeyError("RssFile")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux's /proc")
def test_reading_a_mapped_file_hands_its_pages_back(tmp_path):
    """What keeps load()'s peak near 1x the weights: the pages copied from are released."""
    size = 8 * memoryfile.RELEASE_EVERY
    path = tmp_path / "data"
    path.write_bytes(os.urandom(size))
    target = bytearray(size)
    with open(path, "rb") as file:
        view = skorch_loadfix.untrusted._mapped(file)
    assert view is not None
    before = rss_file_kib()
    assert memoryfile.MemoryFile(view).readinto(target) == size
    released = rss_file_kib() - before
    assert target == path.read_bytes()
    before = rss_file_kib()
    target[:] = view  # the control: a plain copy keeps every page
    kept = rss_file_kib() - before
    del view
    assert released * 1024 < 2 * memoryfile.RELEASE_EVERY <= size <= kept * 1024 * 1.05


def classifier(**kwargs):
    """Of torch's own modules only, so the default allowlist must do."""
    return NeuralNetClassifier(
        torch.nn.Linear,
        module__in_features=4,
        module__out_features=2,
        criterion=torch.nn.CrossEntropyLoss,
        max_epochs=2,
        verbose=0,
        **kwargs,
    )


def callbacks(tmp):
    found = [
        EpochScoring("accuracy", name="by_name"),
        EpochScoring(accuracy_score, name="by_function", use_caching=False),
        Checkpoint(dirname=str(tmp)),
        EarlyStopping(patience=3),
        LRScheduler(policy=torch.optim.lr_scheduler.StepLR, step_size=1),
    ]
    if Version(skorch.__version__) >= Version("1.0"):  # before, fit() fails on scorer objects
        found.append(EpochScoring(make_scorer(accuracy_score), name="by_scorer"))
    return found


LEGIT = {
    "classifier with callbacks": lambda tmp: classifier(callbacks=callbacks(tmp)).fit(X, y),
    "regressor": lambda tmp: NeuralNetRegressor(
        torch.nn.Linear(4, 1), optimizer=torch.optim.Adam, max_epochs=2, verbose=0
    ).fit(X, y[:, None].astype("float32")),
    "pandas input": lambda tmp: classifier().fit(pd.DataFrame(X).to_numpy(), pd.Series(y)),
    "pipeline": lambda tmp: Pipeline([("scale", StandardScaler()), ("net", classifier())]).fit(
        X, y
    ),
}


@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize("kind", LEGIT)
def test_legit_nets_load_with_default_allow(tmp_path, kind, writer):
    fitted = LEGIT[kind](tmp_path)
    net = fitted[-1] if kind == "pipeline" else fitted
    data = pickle.dumps(fitted) if kind == "pipeline" else dumps(net, writer)
    assert skorch_loadfix.untrusted_globals(io.BytesIO(data)) == {}
    loaded = skorch_loadfix.load(io.BytesIO(data))
    if kind == "pipeline":
        np.testing.assert_array_equal(loaded.predict_proba(X), fitted.predict_proba(X))
        loaded, net = loaded[-1], net
    assert_same_net(
        loaded, net, *((X, y[:, None].astype("float32")) if kind == "regressor" else ())
    )


@pytest.mark.parametrize("weights_only", [True, False])
@pytest.mark.parametrize("writer", WRITERS)
def test_strict_loads_legit_nets_without_warning(net, writer, weights_only):
    skorch_loadfix.apply(strict=True)
    try:
        with (
            warnings.catch_warnings(),
            skorch_loadfix.torch_load_kwargs(weights_only=weights_only),
        ):
            warnings.filterwarnings("error", ".*weights_only")
            assert_same_net(pickle.loads(dumps(net, writer)), net)
    finally:
        skorch_loadfix.revert()


@pytest.mark.parametrize("writer", WRITERS)
def test_net_trained_on_cuda_loads_on_cpu(monkeypatch, writer):
    net = classifier().fit(X, y)
    expected = net.predict_proba(X)
    net.device = "cuda"
    monkeypatch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
    data = dumps(net, writer)
    monkeypatch.undo()
    assert b"cuda:0" in data
    with pytest.warns(UserWarning):  # skorch's DeviceWarning: no CUDA here
        loaded = skorch_loadfix.load(io.BytesIO(data))
    assert str(loaded.device) == "cpu"
    np.testing.assert_array_equal(loaded.predict_proba(X), expected)


def corpus() -> list[Path]:
    folder = os.environ.get("SKORCH_LOADFIX_CORPUS")
    return sorted(Path(folder).glob("*.pkl")) if folder else []


@pytest.mark.skipif(not corpus(), reason="no corpus: run through nox, which writes one")
@pytest.mark.parametrize("path", corpus(), ids=lambda p: p.stem)
def test_pickle_from_every_skorch_version_loads(path):
    net = skorch_loadfix.load(path, allow=[Model, Block])
    np.testing.assert_array_equal(net.predict_proba(X), np.load(path.with_suffix(".npy")))


# -- Bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("content", ["truncated", "truncated payload"])  # others: test_containers
def test_unreadable_files_are_one_clear_error(marker, net, content):
    if content == "truncated":
        data = pickle.dumps(net)
        content = data[: len(data) // 2]
    elif content == "truncated payload":
        content = payload_file(marker, net, "__reduce__ protocol 4", OUTER)[1][:-1]
    with pytest.raises(pickle.UnpicklingError, match="not a readable pickle"):
        skorch_loadfix.load(io.BytesIO(content))
    assert not marker.exists()


def test_allowed_globals_in_the_wrong_shape_are_one_clear_error(net):
    data = dumps_state(net, {})  # a net without its state
    with pytest.raises(pickle.UnpicklingError, match=r"not a readable pickle \(KeyError"):
        skorch_loadfix.load(io.BytesIO(data))


@pytest.mark.parametrize("strict", [True, False])
def test_corrupted_blob_is_one_clear_error(net, strict):
    data = placed(b"PK\x03\x04 not a zip", BLOB_LEVEL, net, net.__getstate__())
    unreadable = pytest.raises(pickle.UnpicklingError, match="not a readable pickle.*BadZipFile")
    with unreadable:
        skorch_loadfix.load(io.BytesIO(data), allow=[Model, Block])
    with unreadable:
        load_with(data, strict=strict, weights_only=True)


@pytest.mark.parametrize(
    ("allow", "error", "message"),
    [
        ("Model", TypeError, "allow must be a list"),
        ([1], TypeError, "neither a class, a function nor"),
        ([eval], ValueError, "builtins.eval is on the hard blocklist"),
    ],
)
def test_bad_allow_is_a_clear_error(allow, error, message):
    with pytest.raises(error, match=message):
        skorch_loadfix.load(io.BytesIO(b""), allow=allow)


def test_text_file_is_a_clear_error(tmp_path):
    path = tmp_path / "net.pkl"
    path.write_bytes(b"")
    with open(path) as text, pytest.raises(TypeError, match=r"binary mode \('rb'\)"):
        skorch_loadfix.load(text)


@pytest.mark.parametrize(
    ("caller", "error", "message"),
    [
        ({"weights_only": True}, UntrustedPickleError, "no_such_module.thing: not allowed"),
        # the control: the caller's weights_only=False is trust, strict or not
        ({"weights_only": False}, ModuleNotFoundError, "no_such_module"),
    ],
)
def test_strict_restricts_unless_the_caller_says_weights_only_false(net, caller, error, message):
    """Under strict the file's own weights_only=False doesn't count; the caller's does."""
    state = {**net.__getstate__(), "torch_load_kwargs": {"weights_only": False}}
    data = placed(b"cno_such_module\nthing\n.", BLOB_LEVEL, net, state)
    skorch_loadfix.apply(strict=True)
    try:
        with pytest.raises(error, match=message), skorch_loadfix.torch_load_kwargs(**caller):
            pickle.loads(data)
    finally:
        skorch_loadfix.revert()


# -- The audit and the loader agree ------------------------------------------------------------

DATA = Path(__file__).parent / "data" / "corpus"


def everything(marker, net, tmp_path) -> dict[str, bytes]:
    """The whole corpus: every payload at every level, legit nets, the real files."""
    files = {}
    state = net.__getstate__()
    for payload in families(marker).values():
        for level in payload.levels:
            files[f"{payload.family} @ {level}"] = placed(payload.data, level, net, state)
    for kind, make in LEGIT.items():
        fitted = make(tmp_path)
        files[kind] = pickle.dumps(fitted)
    for writer in WRITERS:
        files[f"own net, {writer}"] = dumps(net, writer)
    files.update({path.name: path.read_bytes() for path in sorted(DATA.glob("*.pkl"))})
    return files


def test_audit_and_loader_agree_on_the_whole_corpus(marker, net, tmp_path):
    """untrusted_globals() empty => load() succeeds and nothing ran; load() refuses =>
    untrusted_globals() names something."""
    disagree = {}
    for name, data in everything(marker, net, tmp_path).items():
        payload = families(marker).get(name.partition(" @ ")[0])
        with registered(payload) if payload else contextlib.nullcontext():
            refused = skorch_loadfix.untrusted_globals(io.BytesIO(data), allow=[Model, Block])
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # skorch's DeviceWarning for cuda nets
                    skorch_loadfix.load(io.BytesIO(data), allow=[Model, Block])
                outcome = "loaded"
            except UntrustedPickleError:
                outcome = "refused"
        if marker.exists():
            disagree[name] = "it ran"
            clear(marker)
        elif (outcome == "refused") != bool(refused):
            disagree[name] = f"load() {outcome}, untrusted_globals() {refused}"
    assert disagree == {}


def test_class_patching_through_identity(marker, net):
    """The control patches EpochTimer process-wide; every guarded load refuses it."""
    from skorch.callbacks import EpochTimer

    payload = families(marker)["class patching through _identity"]
    original = EpochTimer.__dict__["on_epoch_begin"]
    with pytest.raises(UntrustedPickleError, match="skorch.utils._identity"):
        skorch_loadfix.load(io.BytesIO(payload.data))
    assert EpochTimer.__dict__["on_epoch_begin"] is original
    try:
        pickle.loads(payload.data)  # what the caller's own pickle.load does with it
        assert EpochTimer.on_epoch_begin is print
    finally:
        EpochTimer.on_epoch_begin = original


@pytest.mark.parametrize("path", sorted(DATA.glob("*.pkl")), ids=lambda p: p.stem)
def test_real_files_are_inspected(path, capsys):
    from skorch_loadfix.__main__ import main

    assert main(["inspect", str(path)]) == 0
    report = capsys.readouterr().out
    assert "net: skorch.classifier.NeuralNetClassifier" in report
    assert "blob written by: torch.save" in report or "blob written by: pickle" in report


@pytest.mark.parametrize(
    "path", [DATA / "net_cuda-2022-08-01-2c672c6.pkl", DATA / "net_cuda-2025-01-31-4b22181.pkl"]
)
def test_real_files_from_2022_on_load(path):
    """skorch.toy.MLPModule is on the published list; the net was trained on CUDA. (The older
    files name skorch.dataset.CVSplit and torch's thnn backend: legacy.py's renames.)"""
    with pytest.warns(UserWarning):  # skorch's DeviceWarning: no CUDA here
        loaded = skorch_loadfix.load(path)
    width = next(m.in_features for m in loaded.module_.modules() if hasattr(m, "in_features"))
    assert loaded.predict(np.zeros((3, width), dtype="float32")).shape == (3,)


# -- Method shadowing and the blob's type (the red team's F2-F7) -----------------------------


@contextlib.contextmanager
def adam_step_kept():
    """Adam's own step, not yet wrapped by torch (as before any Adam in the process)."""
    original = torch.optim.Adam.__dict__["step"]
    torch.optim.Adam.step = unwrapped = getattr(original, "__wrapped__", original)
    try:
        yield unwrapped
    finally:
        torch.optim.Adam.step = original


def test_shadowing_profile_hook_step_patches_adam_unguarded():
    """The control of the shadowing families: plain pickle lets the file replace Adam.step."""
    with adam_step_kept():
        pickle.loads(payload_module.step_patch())
        assert isinstance(torch.optim.Adam.__dict__["step"], torch.nn.Identity)


def test_optimizer_state_calls_what_the_file_chose_unguarded(capsys):
    """The control of the optimizer-state family: plain pickle calls the file's print."""
    pickle.loads(payload_module.defaults_call())
    assert capsys.readouterr().out == "differentiable False\n"


def test_step_is_checked_even_without_the_shadowing_rule(monkeypatch):
    """The second line: with the key rule off, the optimizer's changed step is undone."""
    from skorch_loadfix.safe.unpickler import Rules

    monkeypatch.setattr(Rules, "_shadowing", lambda *args: None)
    monkeypatch.setattr(verifier, "refuse_untrusted", lambda *args: None)
    with adam_step_kept() as unwrapped:
        with pytest.raises(UntrustedPickleError, match="replaced the class's step"):
            skorch_loadfix.load(io.BytesIO(payload_module.step_patch()))
        assert torch.optim.Adam.__dict__["step"] is unwrapped
        # A legit Adam, the first in the process: torch's own wrapping of step passes.
        adam = torch.optim.Adam(torch.nn.Linear(2, 1).parameters())
        torch.optim.Adam.step = unwrapped
        skorch_loadfix.load(io.BytesIO(pickle.dumps(adam)))
        assert torch.optim.Adam.__dict__["step"].__wrapped__ is unwrapped


@pytest.mark.parametrize("blob", [bytearray, str, int], ids=lambda kind: kind.__name__)
def test_a_blob_that_is_not_bytes_is_refused_by_audit_and_loader(marker, net, blob):
    system = pickle.dumps(payload_module.Reduce(os.system, f"touch {marker}"))
    value = {bytearray: bytearray(system), str: system.decode("latin1"), int: 7}[blob]
    data = dumps_state(net, {**net.__getstate__(), "__cuda_dependent_attributes__": value})
    found = skorch_loadfix.untrusted_globals(io.BytesIO(data), allow=[Model, Block])
    assert list(found) == [verifier.NOT_BYTES]
    with pytest.raises(UntrustedPickleError, match="not bytes"):
        skorch_loadfix.load(io.BytesIO(data), allow=[Model, Block])
    with pytest.raises(UntrustedPickleError, match="not bytes"):
        load_with(data, strict=True, weights_only=True)
    assert not marker.exists()
    if blob is bytearray:  # the control: upstream reads a bytearray blob, and it runs
        with contextlib.suppress(Exception):
            load_with(data, strict=False, weights_only=False)
        assert marker.exists()
