"""Pickled nets load, on the installed skorch, with the patch: the real thing, no mocks."""

import copy
import io
import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import skorch.utils
import torch
from models import (
    TORCH_DEFAULTS_TO_WEIGHTS_ONLY,
    TORCH_WARNS_WITHOUT_WEIGHTS_ONLY,
    ModelWithUnlisted,
    Unlisted,
    X,
    fit,
    loads_recording,
    needs_safe_globals,
    outcome,
    y,
)
from skorch.exceptions import DeviceWarning

import skorch_loadfix
from skorch_loadfix.formats import WRITERS, dumps
from skorch_loadfix.safe.memoryfile import MemoryFile
from skorch_loadfix.safe.readers import Reader

KWARGS = [None, {"weights_only": True}, {"weights_only": False}]


def expected_unpatched(writer: str) -> str:
    """What the installed skorch does with such a file on the installed torch."""
    if writer == "pickle" and hasattr(skorch.utils, "_TorchLoadUnpickler"):
        return "ok"
    if TORCH_DEFAULTS_TO_WEIGHTS_ONLY or writer == "pickle":
        return "fails"
    return "warns" if TORCH_WARNS_WITHOUT_WEIGHTS_ONLY else "ok"


@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize("kwargs", KWARGS, ids=["default", "weights_only", "not_weights_only"])
def test_round_trip_without_warning(patched, writer, kwargs):
    net = fit(**({} if kwargs is None else {"torch_load_kwargs": kwargs}))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", ".*weights_only")
        loaded = pickle.loads(dumps(net, writer))
        natural = pickle.loads(pickle.dumps(net))
    for other in loaded, natural:
        np.testing.assert_array_equal(other.predict_proba(X), net.predict_proba(X))
        assert other.torch_load_kwargs == kwargs
    loaded.partial_fit(X, y)  # tensors stay ordinary: Adam steps on them


def test_deepcopy_of_initialized_net(patched):
    net = fit()
    np.testing.assert_array_equal(copy.deepcopy(net).predict_proba(X), net.predict_proba(X))


@pytest.mark.parametrize("writer", WRITERS)
def test_unpatched_behaviour_comes_back_after_revert(writer):
    data = dumps(fit(), writer)
    assert outcome(data) == expected_unpatched(writer)
    skorch_loadfix.apply()
    try:
        assert outcome(data) == "ok"
    finally:
        skorch_loadfix.revert()
    assert outcome(data) == expected_unpatched(writer)


@pytest.mark.parametrize("writer", WRITERS)
def test_weights_only_restricts_the_blob_as_its_reader_would(patched, writer):
    """skorch <= 1.1 torch.loads its blob: weights_only=True restricts it all. skorch 1.2-1.4
    read theirs with pickle and restrict only its tensor streams: so does apply(). strict
    restricts both."""
    data = dumps(fit(ModelWithUnlisted), writer)
    refused = pytest.raises(skorch_loadfix.UntrustedPickleError, match=r"models\.Unlisted")
    with skorch_loadfix.torch_load_kwargs(weights_only=True):
        if writer == "torch.save":
            with refused:
                pickle.loads(data)
        else:
            assert isinstance(pickle.loads(data).module_.extra, Unlisted)
        skorch_loadfix.apply(strict=True)
        with refused:
            pickle.loads(data)
    with skorch_loadfix.torch_load_kwargs(weights_only=False):
        assert isinstance(pickle.loads(data).module_.extra, Unlisted)


@needs_safe_globals
@pytest.mark.parametrize("writer", WRITERS)
def test_weights_only_loads_what_the_user_registered(patched, writer):
    data = dumps(fit(ModelWithUnlisted), writer)
    with (
        torch.serialization.safe_globals([Unlisted]),
        skorch_loadfix.torch_load_kwargs(weights_only=True),
    ):
        registered = set(torch.serialization.get_safe_globals())
        assert isinstance(pickle.loads(data).module_.extra, Unlisted)
        assert set(torch.serialization.get_safe_globals()) == registered


def test_legacy_torch_stream_blob(patched, monkeypatch):
    """The non-zip torch.save stream, as torch < 1.6 wrote it, loads too."""
    net, save = fit(), torch.save
    monkeypatch.setattr(
        torch, "save", lambda obj, f, **_: save(obj, f, _use_new_zipfile_serialization=False)
    )
    data = dumps(net, "torch.save")
    monkeypatch.undo()
    assert b"PK\x03\x04" not in data
    assert pickle.loads(data).__dict__.keys() == net.__dict__.keys()
    np.testing.assert_array_equal(pickle.loads(data).predict_proba(X), net.predict_proba(X))


def device_warnings(data: bytes) -> list[str]:
    _, caught = loads_recording(data)  # the DeviceWarnings come before any failure
    return [str(w.message) for w in caught if issubclass(w.category, DeviceWarning)]


@pytest.mark.parametrize("writer", WRITERS)
def test_net_trained_on_cuda_loads_on_cpu(writer, monkeypatch):
    """A file whose tensors say cuda:0, as a GPU machine writes it, fabricated on CPU."""
    net = fit()
    net.device = "cuda"
    monkeypatch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
    data = dumps(net, writer)
    monkeypatch.undo()
    assert b"cuda:0" in data
    unpatched = device_warnings(data)
    skorch_loadfix.apply()
    try:
        assert device_warnings(data) == unpatched != []
        loaded = pickle.loads(data)
    finally:
        skorch_loadfix.revert()
    assert str(loaded.device) == "cpu"
    assert all(p.device.type == "cpu" for p in loaded.module_.parameters())
    np.testing.assert_array_equal(loaded.predict_proba(X), fit_predictions(net))


def fit_predictions(net):
    net.device = "cpu"
    return net.predict_proba(X)


def corpus() -> list[Path]:
    """Pickles written by every skorch version the test run brought (see noxfile.py)."""
    folder = os.environ.get("SKORCH_LOADFIX_CORPUS")
    return sorted(Path(folder).glob("*.pkl")) if folder else []


@pytest.mark.skipif(not corpus(), reason="no corpus: run through nox, which writes one")
@pytest.mark.parametrize("path", corpus(), ids=lambda p: p.stem)
def test_pickle_from_other_skorch_version(patched, path):
    with warnings.catch_warnings():
        warnings.filterwarnings("error", ".*weights_only")
        net = pickle.loads(path.read_bytes())
    np.testing.assert_array_equal(net.predict_proba(X), np.load(path.with_suffix(".npy")))


class ModelWithBytes(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 400)  # 6 kB of weights: inside a pickle frame
        self.big = torch.nn.Linear(400, 1000)  # 1.6 MB: outside any frame, read in place
        self.head = torch.nn.Linear(1000, 2)
        self.raw = b"\x00" * 100_000  # bytes that are not a tensor stream

    def forward(self, x):
        return self.head(torch.relu(self.big(torch.relu(self.linear(x)))))


def test_tensor_streams_are_read_from_the_blob_in_place(patched, monkeypatch):
    """Each large nested tensor stream reaches torch as a view of the blob, not a copy of it."""
    net = fit(ModelWithBytes)
    received = []
    stream = Reader.stream
    monkeypatch.setattr(
        Reader,
        "stream",
        lambda self, data: received.append(data) or stream(self, data),
    )
    loaded = pickle.loads(dumps(net, "pickle"))
    assert any(isinstance(data, memoryview) and data.nbytes > 1_600_000 for data in received)
    assert type(loaded.module_.raw) is bytes and loaded.module_.raw == net.module_.raw
    np.testing.assert_array_equal(loaded.predict_proba(X), net.predict_proba(X))
    loaded.partial_fit(X, y)


@pytest.mark.parametrize("size", [None, -1, 0, 1, 3, 4097, 10_000])
def test_memory_file_reads_as_bytes_io_does(size):
    """torch and pickle read the blob through MemoryFile: it must answer as a file does."""
    data = b"GLOBAL\nname\n" + b"x" * 5000 + b"\nlast line, no newline"
    memory, reference = MemoryFile(data), io.BytesIO(data)
    for _ in range(5):
        assert memory.readline(size) == reference.readline(size)
        assert memory.tell() == reference.tell()
    assert memory.seek(-4, io.SEEK_END) == reference.seek(-4, io.SEEK_END)
    into, expected = bytearray(8), bytearray(8)
    assert memory.readinto(into) == reference.readinto(expected) and into == expected
    assert memory.read() == reference.read() == b""
