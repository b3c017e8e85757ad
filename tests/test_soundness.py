"""Issue 16, items 1, 3 and 4: numpy's and torch's C code never takes a state the file chose,
the audit answers as the loader does, and a small file costs little.

Each family is refused by ``load()`` and by the audit at every level it fits, by strict mode,
and by ``apply()`` with ``weights_only`` in a ``torch.save`` blob. Each has its control: plain
``pickle.load`` of the same bytes, in a subprocess (it may crash, or allocate), shows the
effect the refusal prevents.
"""

from __future__ import annotations

import encodings.cp437  # noqa: F401  zipfile decodes the names of replaced() zips with it
import functools
import inspect
import io
import json
import pickle
import pickletools
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import payloads as payload_module
import pytest
import torch
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from models import fit
from payloads import (
    BLOB_LEVEL,
    OUTER,
    _partial,
    _Stream,
    _torch_save,
    dag,
    legacy_stream,
    nested,
    numpy_dtype,
    placed,
    replaced,
    soundness,
    storage,
    tensor,
    torch_streams,
)
from sklearn.impute._iterative import _ImputerTriplet

import skorch_loadfix
from skorch_loadfix import UntrustedPickleError
from skorch_loadfix.demo_model import Block, Model
from skorch_loadfix.inspection import inspect_file
from skorch_loadfix.safe import described
from skorch_loadfix.safe.described import STORAGE_TYPES

ALLOW = [Model, Block]
FAMILIES = {payload.family: payload for payload in [*soundness(), *torch_streams()]}
CASES = [(family, level) for family, payload in FAMILIES.items() for level in payload.levels]
NUMPY = [payload.family for payload in soundness() if b"numpy" in payload.data]


@pytest.fixture(scope="module")
def net():
    return fit()


def file_with(family: str, level: str, net) -> bytes:
    return placed(FAMILIES[family].data, level, net, net.__getstate__())


def assert_names(refused: dict[str, str], family: str, level: str) -> None:
    payload = FAMILIES[family]
    assert payload.refused in refused, refused
    assert f"in the {payload.level_refused(level)}" in refused[payload.refused], refused


@pytest.mark.parametrize(("family", "level"), CASES)
def test_load_and_the_audit_refuse(net, family, level):
    data = file_with(family, level, net)
    assert_names(skorch_loadfix.untrusted_globals(io.BytesIO(data), allow=ALLOW), family, level)
    with pytest.raises(UntrustedPickleError) as error:
        skorch_loadfix.load(io.BytesIO(data), allow=ALLOW)
    assert_names(error.value.refused, family, level)


def nested_load(data: bytes, *, strict: bool) -> None:
    skorch_loadfix.apply(strict=strict)
    try:
        with skorch_loadfix.torch_load_kwargs(weights_only=True):
            pickle.loads(data)
    finally:
        skorch_loadfix.revert()


@pytest.mark.parametrize(("family", "level"), [case for case in CASES if case[1] != OUTER])
def test_strict_refuses(net, family, level):
    with pytest.raises(UntrustedPickleError) as error:
        nested_load(file_with(family, level, net), strict=True)
    assert_names(error.value.refused, family, level)


def torch_saved_blob(family: str) -> bytes:
    """The family as a ``torch.save`` blob: a zip holding it as data.pkl, or the old stream."""
    data = FAMILIES[family].data
    return data if family not in NUMPY else replaced(_torch_save({}), data)


@pytest.mark.parametrize("family", [*NUMPY, *(payload.family for payload in torch_streams())])
def test_weights_only_refuses_in_a_torch_save_blob(net, family):
    """Plain ``apply()`` reads a ``torch.save`` blob, as skorch <= 1.1 ``torch.load``s it, with
    the restricted unpickler: a zip's data.pkl and an old stream alike."""
    data = placed(torch_saved_blob(family), BLOB_LEVEL, net, net.__getstate__())
    with pytest.raises(UntrustedPickleError) as error:
        nested_load(data, strict=False)
    assert FAMILIES[family].refused in error.value.refused


SMALL = [family for family, payload in FAMILIES.items() if len(payload.data) < 1024]


@pytest.mark.parametrize("family", SMALL)
def test_small_files_are_refused_in_under_a_second(family):
    """The issue's bound, generous for a reading that takes milliseconds. An old torch stream
    is a file's tensor stream."""
    payload = FAMILIES[family]
    data = payload.data if OUTER in payload.levels else streamed(payload.data)
    for name, read in {
        "audit": lambda: skorch_loadfix.untrusted_globals(io.BytesIO(data)),
        "load()": lambda: pytest.raises(
            UntrustedPickleError, skorch_loadfix.load, io.BytesIO(data)
        ),
        "inspect": lambda: inspect_file(data),
    }.items():
        start = time.perf_counter()
        read()
        assert time.perf_counter() - start < 1, name


# -- the controls: plain pickle.load of the same bytes -------------------------------------

CONTROL = """
import pickle, resource, sys, traceback
import numpy, torch
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))  # a 3 GiB allocation fails
try:
    obj = {load}(open(sys.argv[1], "rb"))
    {use}
except BaseException as error:
    print(type(error).__name__, error)
"""
# family -> (what the control does with what it loaded, what it shows; None: it crashes)
EFFECTS = {
    "an object dtype's flags cleared: raw bytes read as an object pointer": ("print(obj[0])", None),
    "an object dtype's flags cleared: a scalar read from raw bytes": ("print(obj)", None),
    "raw bytes read through an object dtype": ("", "cannot create an OBJECT array"),
    "an item size grown under an array that uses the dtype": (
        "print(len(obj.tobytes()), 'bytes read from 8')",
        "65536 bytes read from 8",
    ),
    "a field whose descriptor is an int": ("obj.copy()", None),
    "a dtype name numpy does not know": ("", "data type 'bogus' not understood"),
    "an array given fewer bytes than its shape needs": ("", "buffer size does not match"),
    "bytearray(3 << 30): 3 GiB from a 32-byte file": ("", "MemoryError"),
    "a deque whose maximum length is 2**62": ("print(obj.maxlen)", "4611686018427387904"),
    "a range beyond int64": ("len(obj)", "OverflowError"),
    "a torch.Size with a negative size": ("print(obj)", "torch.Size([-1])"),
    "a torch.device torch reads as another": ("print('index', obj.index)", "index -56"),
    "a 40-level DAG of shared lists as a dtype's state": ("", "incorrect subarray"),
    "a 40-level DAG of shared lists as bytearray's argument": ("", "cannot be interpreted"),
    "lists nested 10000 deep as a deque's items": ("repr(obj)", "RecursionError"),
    # torch's own reader, unrestricted: what the storage ids and tensor arguments reach
    "a storage of 2**40 floats from a small stream": ("", "allocate"),
    "a tensor beyond its storage": ("", "4194304"),  # torch grew the storage to fit it
    "a tensor at a negative offset": ("", "offset"),
    "an int tensor that requires grad": ("", "floating point and complex dtype can require"),
    "a storage type torch does not know": ("", "XloatStorage"),
    "a 40-level DAG of shared lists as a tensor's metadata": ("", "expected dict"),
}
TORCH_LOAD = "(lambda file: torch.load(file, weights_only=False))"


def control(family: str, tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / "payload.pkl"
    path.write_bytes(FAMILIES[family].data)
    torch_stream = family in {payload.family for payload in torch_streams()}
    load = TORCH_LOAD if torch_stream else "pickle.load"
    code = CONTROL.format(load=load, use=EFFECTS[family][0] or "pass")
    run = [sys.executable, "-c", code, str(path)]
    return subprocess.run(run, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_control_shows_the_effect(family, tmp_path):
    shown = EFFECTS[family][1]
    found = control(family, tmp_path)
    if shown is None:  # killed by a signal (memory corruption), or numpy reading junk as a
        numpy_reads = "'int' object has no attribute" in found.stdout  # descriptor
        assert found.returncode < 0 or numpy_reads, found
    else:
        assert found.returncode == 0 and shown in found.stdout, found


# -- one rule set --------------------------------------------------------------------------


def test_storage_names_are_exactly_torchs():
    known = torch.storage._storage_type_to_dtype_map()
    assert set(STORAGE_TYPES) == set(known)
    for name, (size, differentiable, quantized) in STORAGE_TYPES.items():
        dtype = known[name]
        assert size == torch._utils._element_size(dtype), name
        assert differentiable == (dtype.is_floating_point or dtype.is_complex), name
        assert quantized == (dtype in (torch.qint8, torch.qint32, torch.quint8, torch.quint4x2,
                                       torch.quint2x4)), name  # fmt: skip


def streamed(stream: bytes) -> bytes:
    return pickle.dumps(_Stream(stream), 2)


@pytest.mark.parametrize("module", [b"torch", b"skorch"])
def test_storage_types_are_answered_by_name_as_torch_does(module):
    """torch's find_class answers any ``<module>.FloatStorage`` by its name alone: so does the
    audit, and the stream loads."""
    data = streamed(
        legacy_stream(storage(16)).replace(b"ctorch\nFloat", b"c" + module + b"\nFloat")
    )
    assert skorch_loadfix.untrusted_globals(io.BytesIO(data)) == {}
    assert skorch_loadfix.load(io.BytesIO(data)).nbytes() == 64


def test_a_key_reused_for_another_storage_is_refused():
    """torch hands back the storage first filed under a key, whatever a later id says."""
    first, second = storage(16), storage(4, torch.DoubleStorage)  # the same key
    data = streamed(legacy_stream((tensor(first), tensor(second, size=(4,)))))
    assert skorch_loadfix.untrusted_globals(io.BytesIO(data))
    with pytest.raises(UntrustedPickleError, match="another type or size"):
        skorch_loadfix.load(io.BytesIO(data))
    stream = legacy_stream((tensor(first), tensor(second, size=(4,))))
    unguarded = torch.load(io.BytesIO(stream), weights_only=False)
    assert unguarded[1].dtype == torch.float32  # the control: not the doubles the id said


def test_an_old_streams_storage_must_be_its_datas_size():
    """torch allocates an old stream's storage as its id says, then fails reading data of
    another size: the audit refuses it as the loader does."""
    data = streamed(legacy_stream(storage(8)))  # the data that follows holds 16 floats
    assert "a storage of another size than its id's" in skorch_loadfix.untrusted_globals(
        io.BytesIO(data)
    )
    with pytest.raises(UntrustedPickleError, match="another size than its id's"):
        skorch_loadfix.load(io.BytesIO(data))
    with pytest.raises(RuntimeError, match="wrong byte size"):  # the control
        torch.load(io.BytesIO(legacy_stream(storage(8))), weights_only=False)


def test_a_zip_storage_must_be_its_records_size():
    """torch refuses a storage whose record has another size than its id says: so does the
    audit (it once passed what load() failed on)."""
    archive = _torch_save(torch.zeros(16).storage())
    pickled = zipfile.ZipFile(io.BytesIO(archive)).read("archive/data.pkl")
    assert b"K\x10t" in pickled  # numel 16, as a BININT1
    data = streamed(replaced(archive, pickled.replace(b"K\x10t", b"K\x20t")))
    assert "BINPERSID on a builtins.tuple" in skorch_loadfix.untrusted_globals(io.BytesIO(data))
    with pytest.raises(UntrustedPickleError, match="its record's"):
        skorch_loadfix.load(io.BytesIO(data))
    with pytest.raises(RuntimeError, match="record size"):  # the control: torch's own reading
        torch.load(io.BytesIO(replaced(archive, pickled.replace(b"K\x10t", b"K\x20t"))))


# -- linear and bounded ----------------------------------------------------------------------


def paths(obj, seen=None) -> int:
    """How many times a walk that does not remember what it saw visits ``obj``'s lists."""
    seen = {} if seen is None else seen
    if id(obj) not in seen:
        seen[id(obj)] = 1 + sum(paths(item, seen) for item in obj)
    return seen[id(obj)]


DAG_FILES = {  # where -> (the file, whether it loads)
    "a deque's items": (b"\x80\x02" + payload_module._g("collections", "deque") + b"(" + dag(40)
                        + b"tR.", True),
    "a partial's arguments": (b"\x80\x02"
                              + _partial("skorch.callbacks.logging", "EpochTimer",
                                         b"(" + dag(40) + b"t", b"}") + b".", True),
    "a dtype's state": (FAMILIES["a 40-level DAG of shared lists as a dtype's state"].data, False),
}  # fmt: skip


def test_the_dag_has_2_to_the_40_paths():
    """The control: a walk that does not remember what it saw visits 2**41 - 1 lists."""
    assert paths(pickle.loads(b"\x80\x02" + dag(40) + b".")) == 2**41 - 1


@pytest.mark.parametrize("where", list(DAG_FILES))
def test_a_shared_dag_is_walked_once(where):
    data, loads = DAG_FILES[where]
    assert len(data) < 1024
    start = time.perf_counter()
    assert (skorch_loadfix.untrusted_globals(io.BytesIO(data)) == {}) == loads
    if loads:
        skorch_loadfix.load(io.BytesIO(data))
    else:
        with pytest.raises(UntrustedPickleError):
            skorch_loadfix.load(io.BytesIO(data))
    inspect_file(data)
    assert time.perf_counter() - start < 1  # the bound: the three readings together


NESTED = {
    "a deque's items": b"\x80\x02" + payload_module._g("collections", "deque") + b"(" + nested(5000)
    + b"tR.",
    "a partial's arguments": b"\x80\x02" + _partial("skorch.callbacks.logging", "EpochTimer",
                                                   b"(" + nested(5000) + b"t", b"}") + b".",
    "a dtype's state": b"\x80\x02" + numpy_dtype("f8") + b"(I3\nV<\n" + nested(5000)
    + b"NNI-1\nI-1\nI0\ntb.",
}  # fmt: skip


@pytest.mark.parametrize("where", list(NESTED))
def test_deep_nesting_is_a_clear_refusal(where):
    data = NESTED[where]
    with pytest.raises(RecursionError):  # the control: a recursive walk of the same data
        json.dumps(pickle.loads(data[:2] + nested(5000) + b"."))
    assert skorch_loadfix.untrusted_globals(io.BytesIO(data))
    with pytest.raises(UntrustedPickleError):
        skorch_loadfix.load(io.BytesIO(data))


# -- what loads is canonical -----------------------------------------------------------------


NUMPY_DTYPES = [
    *["?", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "g"],
    *["c8", "c16", "G", "S0", "S5", "U0", "U5", "V0", "V8", "O", ">f8", ">U2", ">i2"],
    *["M8", "M8[D]", "M8[3s]", "m8[us]", ">m8[2h]"],
]


@pytest.mark.parametrize("spelling", NUMPY_DTYPES)
def test_the_static_description_is_numpys(spelling):
    """The audit judges a dtype without numpy: its description must say what numpy pickles."""
    dtype = np.dtype(spelling)
    _, (name, align, copy), state = dtype.__reduce__()
    built = described.dtype_named(name).build(state)
    assert type(built) is described.DType, built
    assert built.state() == state and np.dtype(built.spelling()) == dtype
    assert described.dtype_named(name).build((*state[:7], state[7] ^ 1, *state[8:])) != built


@functools.cache
def legit_numpy() -> dict[str, object]:
    return {
        "floats": np.arange(6.0).reshape(2, 3),
        "fortran": np.asfortranarray(np.arange(6, dtype="<i2").reshape(2, 3)),
        "big-endian": np.arange(3, dtype=">f4"),
        "permuted": np.arange(24).reshape(2, 3, 4).transpose(2, 0, 1),
        "text": np.array(["a", "bc"]),
        "bytes": np.array([b"ab", b"c"]),
        "void": np.zeros(2, dtype="V3"),
        "objects": np.array(["a", 1, None], dtype=object),
        "dates": np.array(["2020-01-01"], dtype="M8[D]"),
        "durations": np.array([3], dtype="m8[3s]"),
        "bools": np.array([True, False]),
        "half": np.arange(4, dtype="f2"),
        "complex": np.arange(2, dtype="c16"),
        "empty": np.zeros((0, 3)),
        "scalars": [np.float32(1.5), np.str_("ab"), np.bytes_(b"x"), np.datetime64("2020-01-01")],
        "dtypes": [np.dtype("f8"), np.dtype(">i4"), np.dtype("U3"), np.dtype("O")],
    }


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("name", list(legit_numpy()))
def test_numpy_objects_load_canonical(name, protocol):
    """Canonical: what numpy's own unpickling makes, in an array that owns its bytes."""
    data = pickle.dumps(legit_numpy()[name], protocol)
    assert skorch_loadfix.untrusted_globals(io.BytesIO(data)) == {}
    loaded, numpys = skorch_loadfix.load(io.BytesIO(data)), pickle.loads(data)
    for want, got in zip(*(x if type(x) is list else [x] for x in (numpys, loaded)), strict=True):
        assert type(got) is type(want)
        if isinstance(want, np.ndarray):
            assert owns_its_bytes(got)
            assert got.dtype == want.dtype and got.strides == want.strides
            assert got.nbytes == want.nbytes and np.array_equal(got, want)
        elif isinstance(want, np.dtype):
            fresh = np.dtype(want.str)
            assert got == fresh and got.__reduce__() == fresh.__reduce__()
        else:
            assert got == want


# -- the differential test: audit-clean means load() returns it, canonical, and no crash -----

NAMES = ["f8", "O8", "V8", "U2", "S3", "M8", "b1", "i2", "c16", "f16", "bogus", "O"]


def _raw(obj) -> bytes:
    """``obj`` as protocol-3 opcodes, without memo writes (the programs own the memo)."""
    return pickletools.optimize(pickle.dumps(obj, 3))[2:-1]


def _states() -> list[tuple]:
    """Each name's own dtype state, and the states the issue's attacks use."""
    found = []
    for name in NAMES[:-2]:
        state = np.dtype(name).__reduce__()[2]
        found += [state, (*state[:5], 65536, *state[6:]), (*state[:7], 63 - state[7])]
        found.append((*state[:1], ">" if state[1] == "<" else "<", *state[2:]))
    return [*found, (3, "|", None, ("x",), {"x": (1, 0)}, 8, 1, 16)]


def _global(name: str) -> bytes:
    return payload_module._g(*name.rsplit(".", 1))


CALLABLES = [
    _global(name)
    for name in [
        "numpy.dtype", "numpy.core.multiarray._reconstruct", "numpy.core.numeric._frombuffer",
        "numpy.core.multiarray.scalar", "torch.Size", "torch.device", "builtins.bytearray",
        "builtins.bytes", "builtins.range", "builtins.complex", "collections.deque",
        "builtins.list",
    ]
]  # fmt: skip
DTYPE, RECONSTRUCT, FROMBUFFER, SCALAR = CALLABLES[:4]
SHAPES = [(0,), (1,), (2,), (3,), (2, 2), (), [1, 0], (1, 0, 2), (1 << 40,)]
DATA = [b"", b"A", b"AAA", b"A" * 8, b"\0" * 16, b"A" * 24, bytearray(b"A" * 8), ["x", 1]]
ATOMS = [
    *CALLABLES,
    _global("numpy.ndarray"),
    *map(_raw, [*NAMES, "<", ">", "|", "C", "F", "K", "cpu", "cuda:1", "cuda:200", "latin1"]),
    *map(_raw, [0, 1, 2, 3, 8, 16, -1, 63, 1 << 40, True, False, None, [], {}]),
    *map(_raw, [*DATA, *SHAPES, *_states()]),
]


def _raws(values: list) -> st.SearchStrategy:
    return st.sampled_from([("RAW", _raw(value)) for value in values])


_memo = st.integers(0, 3)
_get = _memo.map(lambda i: ("GET", i))
_dtypes = st.integers(0, 1)  # where dtypes are kept, mostly; arrays at 2 and 3
_a_dtype = _dtypes.map(lambda i: ("GET", i))
_item = st.one_of(st.sampled_from(ATOMS).map(lambda raw: ("RAW", raw)), _get)
_state = _raws(_states())


def _dtype(name: tuple, memo: int, state: tuple | None) -> list[tuple]:
    """numpy.dtype(name, False, True), kept at ``memo``, then BUILD with ``state``."""
    made = [("CALL", ("RAW", DTYPE), [name, ("RAW", b"\x89"), ("RAW", b"\x88")]), ("PUT", memo)]
    return made + ([("BUILD_TOP", state)] if state else [])


def _array(memo: int, shape: tuple, dtype: tuple, fortran: tuple, data: tuple) -> list[tuple]:
    """_reconstruct(ndarray, (0,), b'b'), kept at ``memo``, then BUILD with its state."""
    empty = [("RAW", _global("numpy.ndarray")), ("RAW", _raw((0,))), ("RAW", _raw(b"b"))]
    state = ("TUPLE", [("RAW", _raw(1)), shape, dtype, fortran, data])
    return [("CALL", ("RAW", RECONSTRUCT), empty), ("PUT", memo), ("BUILD_TOP", state)]


def _own_state(name: str) -> tuple:
    return np.dtype(name).__reduce__()[2]  # type: ignore[no-any-return]


def _one(op: tuple) -> list[tuple]:
    return [op]


_built_dtype = st.one_of(
    st.builds(_dtype, _raws(NAMES), _dtypes, st.none() | _state),
    *[
        st.sampled_from(NAMES[:-2]).flatmap(
            lambda name: st.builds(_dtype, _raws([name]), _dtypes, _raws([_own_state(name)]))
        )
    ]
    * 3,
)
_consumer = st.one_of(
    st.builds(
        _array, st.integers(2, 3), _raws(SHAPES), _a_dtype, _raws([False, True]), _raws(DATA)
    ),
    st.tuples(
        st.just("CALL"),
        st.just(("RAW", FROMBUFFER)),
        st.tuples(_raws(DATA), _a_dtype, _raws(SHAPES), _raws(["C", "F", "K"])),
    ).map(_one),
    st.tuples(st.just("CALL"), st.just(("RAW", SCALAR)), st.tuples(_a_dtype, _raws(DATA))).map(
        _one
    ),
)


def _fitting(name: str, shape: tuple) -> object:
    """The data an array of ``name`` and ``shape`` takes: a list of objects, or its bytes."""
    count = int(np.prod(shape))
    if name == "O8":
        return ["x"] * count
    return (b"A\0\0\0" * count * np.dtype(name).itemsize)[: count * np.dtype(name).itemsize]


def _typed(name: str, memo: int, shape: tuple, order: str, fortran: bool) -> st.SearchStrategy:
    """A dtype as numpy pickles it, then an array, a protocol-5 array or a scalar of it, with
    the data they take (and sometimes other data)."""
    made = _dtype(("RAW", _raw(name)), memo, ("RAW", _raw(_own_state(name))))
    data = _raws([_fitting(name, shape)]) | _raws(DATA)
    scalar_data = _raws([_fitting(name, ())]) | _raws(DATA)
    dtype = ("GET", memo)
    return st.one_of(
        st.builds(
            _array,
            st.integers(2, 3),
            st.just(("RAW", _raw(shape))),
            st.just(dtype),
            _raws([fortran]),
            data,
        ),
        st.tuples(data, _raws([shape])).map(
            lambda d: [("CALL", ("RAW", FROMBUFFER), [d[0], dtype, d[1], ("RAW", _raw(order))])]
        ),
        scalar_data.map(lambda d: [("CALL", ("RAW", SCALAR), [dtype, d])]),
    ).map(lambda consumer: [*made, *consumer])


_typed_ops = st.builds(
    _typed,
    st.sampled_from(NAMES[:-2]),
    _dtypes,
    st.sampled_from(SHAPES[:6]),
    st.sampled_from(["C", "F"]),
    st.booleans(),
).flatmap(lambda strategy: strategy)
_program_op = st.one_of(
    *[_typed_ops] * 6,
    st.tuples(st.just("CALL"), st.sampled_from(CALLABLES).map(lambda raw: ("RAW", raw)) | _get,
              st.lists(_item, max_size=5)).map(_one),
    _built_dtype,
    _consumer,
    st.tuples(_built_dtype, _consumer).map(lambda ops: [*ops[0], *ops[1]]),
    st.tuples(_built_dtype, _consumer).map(lambda ops: [*ops[0], *ops[1]]),
    st.tuples(st.just("BUILD"), _get, _state | _item).map(_one),
    st.tuples(st.just("SETITEM"), _get, _item, _item).map(_one),
    st.tuples(st.just("PUT"), _memo).map(_one),
    st.tuples(st.just("ITEM"), _item).map(_one),
    st.tuples(st.just("POP")).map(_one),
)  # fmt: skip


def encode(ops: list[list[tuple]]) -> bytes:
    """A well-formed protocol-3 pickle from ``ops`` that returns a tuple of all it made; a
    GET of an unset memo pushes None."""
    out, memo, depth = [b"\x80\x03"], set(), 0

    def push(item: tuple) -> bytes:
        kind, arg = item
        if kind == "TUPLE":
            return b"(" + b"".join(map(push, arg)) + b"t"
        if kind == "RAW":
            return arg
        return b"h" + bytes([arg]) if arg in memo else b"N"

    for kind, *args in (op for group in ops for op in group):
        if kind == "PUT" and depth:
            out.append(b"q" + bytes([args[0]]))
            memo.add(args[0])
        elif kind == "POP" and depth:
            out.append(b"0")
            depth -= 1
        elif kind == "BUILD_TOP" and depth:
            out.append(push(args[0]) + b"b")
        elif kind == "CALL":
            out.append(push(args[0]) + b"(" + b"".join(map(push, args[1])) + b"tR")
        elif kind == "ITEM":
            out.append(push(args[0]))
        elif kind in ("BUILD", "SETITEM"):
            out.append(b"".join(map(push, args)) + (b"b" if kind == "BUILD" else b"s"))
        depth += kind in ("CALL", "ITEM", "BUILD", "SETITEM")
    # It returns everything it made: what is left on the stack, and what the memo holds.
    return b"\x80\x03(" + b"".join(out[1:]) + b"".join(b"h" + bytes([i]) for i in memo) + b"t."


def owns_its_bytes(array) -> bool:
    """Its own memory, or (numpy keeps bytes of over 1000 so) a bytes object of exactly its
    size that nothing else holds: not the file's, which the memo can share."""
    if array.flags.owndata or array.nbytes == 0:
        return True
    base = array.base
    return type(base) is bytes and len(base) == array.nbytes and sys.getrefcount(base) == 3


RUNNER = (
    """
import io, json, pickle, sys
import numpy
import skorch_loadfix

"""
    + inspect.getsource(owns_its_bytes)
    + """

def canonical(obj, problems):
    todo, seen = [obj], set()
    while todo:
        item = todo.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if type(item) in (list, tuple):
            todo += item
        elif isinstance(item, numpy.ndarray):
            if not owns_its_bytes(item):
                problems.append("an array that does not own its bytes")
            if item.dtype.hasobject:  # each element must be an object
                todo += item.ravel().tolist()
            else:  # every byte of it read
                item.tobytes()
            todo.append(item.dtype)
        elif isinstance(item, numpy.dtype):
            fresh = numpy.dtype(item.str)
            if item != fresh or item.__reduce__()[2] != fresh.__reduce__()[2]:
                problems.append(f"a dtype unlike a fresh {item.str}")
        try:
            repr(item)  # reads every byte of it
        except ValueError:  # a generic-unit datetime that is not NaT: numpy prints no value
            pass

for i, data in enumerate(pickle.load(open(sys.argv[1], "rb"))):
    print("start", i, file=sys.stderr, flush=True)
    problems = []
    try:
        clean = skorch_loadfix.untrusted_globals(io.BytesIO(data)) == {}
    except pickle.UnpicklingError:
        clean = False
    try:
        loaded = skorch_loadfix.load(io.BytesIO(data))
    except pickle.UnpicklingError as error:
        if clean:
            problems.append(f"audit-clean, refused: {error}")
    except Exception as error:
        problems.append(f"raised {type(error).__name__}: {error}")
    else:
        canonical(loaded, problems)
    if problems:
        print(json.dumps([i, problems]), flush=True)
"""
)


@settings(max_examples=4, deadline=None, derandomize=True, database=None, phases=[Phase.generate])
@given(st.lists(st.lists(_program_op, max_size=5).map(encode), min_size=150, max_size=150))
def test_audit_clean_programs_load_canonical_and_never_crash(tmp_path_factory, programs):
    """Programs of the table's C-backed entries, BUILD, SETITEM and memo opcodes, batched in
    one subprocess: a crash kills it, and says which program did."""
    path = tmp_path_factory.mktemp("programs") / "programs.pkl"
    path.write_bytes(pickle.dumps(programs))
    run = [sys.executable, "-c", RUNNER, str(path)]
    found = subprocess.run(run, capture_output=True, text=True, timeout=600, env=_env())
    started = [line for line in found.stderr.splitlines() if line.startswith("start ")]
    last = programs[int(started[-1].split()[1])] if started else b""
    assert found.returncode == 0, (found.stderr[-2000:], last)
    problems = [json.loads(line) for line in found.stdout.splitlines()]
    assert problems == [], [(programs[i], why) for i, why in problems]


def _env() -> dict[str, str]:
    import os

    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


class _SharedBytes:
    """An array whose data is one bytes object the pickle also holds elsewhere (a memo GET)."""

    def __init__(self, data: bytes):
        self.data = data

    def __reduce__(self):
        reconstruct = np._core.multiarray._reconstruct
        state = (1, (len(self.data) // 8,), np.dtype("f8"), False, self.data)
        return reconstruct, (np.ndarray, (0,), b"b"), state


def test_arrays_never_write_into_the_files_bytes():
    """numpy keeps bytes of over 1000 as a writable buffer: the file's bytes object, shared
    through the memo with anything else in the load. Each array gets a copy of its own."""
    data = bytes(8 * 2000)
    file = pickle.dumps([_SharedBytes(data), _SharedBytes(data), data], protocol=4)
    first, second, raw = pickle.loads(file)  # the control: one buffer for all three
    first[0] = 1.0
    assert second[0] == 1.0 and raw[:8] != bytes(8)
    assert skorch_loadfix.untrusted_globals(io.BytesIO(file)) == {}
    first, second, raw = skorch_loadfix.load(io.BytesIO(file))
    first[0] = 1.0
    assert second[0] == 0.0 and raw == data
    assert owns_its_bytes(first) and owns_its_bytes(second)


# -- red team 4: nesting, streams in streams, loops a table class's __setstate__ runs ---------


def test_a_deep_tuple_is_refused_before_anything_hashes_it(line):
    """CPython hashes a tuple (a dict key, a set item) recursively in C, with no guard."""
    data = b"\x80\x02}" + b")" + b"\x85" * 300_000 + b"Ns."
    crashed = subprocess.run(
        [sys.executable, "-c", "import pickle, sys; pickle.loads(sys.stdin.buffer.read())"],
        input=data,
        capture_output=True,
    )
    assert crashed.returncode < 0  # the control: SIGSEGV
    for opcodes in (data, b"\x80\x04(" + b")" + b"\x85" * 200 + b"\x91."):  # and a FROZENSET
        with pytest.raises(UntrustedPickleError, match="nest at most 100 deep"):
            if line == "audit and guard":
                assert skorch_loadfix.untrusted_globals(io.BytesIO(opcodes)) != {}
            skorch_loadfix.load(io.BytesIO(opcodes))


class _StreamOf:
    """Pickles as a tensor stream of ``data``, as torch pickles a storage."""

    def __init__(self, data: bytes):
        self.data = data

    def __reduce__(self):
        return torch.storage._load_from_bytes, (self.data,)


def test_a_tensor_stream_never_holds_another(line):
    """torch writes one level: nesting them (1200 deep) only recursed until Python gave up."""
    inner, middle = io.BytesIO(), io.BytesIO()
    torch.save(torch.zeros(2).untyped_storage(), inner)
    torch.save(_StreamOf(inner.getvalue()), middle)
    data = pickle.dumps(_StreamOf(middle.getvalue()))
    assert isinstance(pickle.loads(data), torch.storage.TypedStorage)  # the control: it nests
    with pytest.raises(UntrustedPickleError, match="no tensor stream inside another"):
        if line == "audit and guard":
            assert skorch_loadfix.untrusted_globals(io.BytesIO(data)) != {}
        skorch_loadfix.load(io.BytesIO(data))


def test_an_rnn_takes_only_torchs_weight_names_form(line, monkeypatch):
    """torch < 1.8's form makes RNNBase.__setstate__ loop over the file's num_layers."""
    lstm = torch.nn.LSTM(1, 1)
    legit = pickle.dumps(lstm)
    state = {k: v for k, v in lstm.__dict__.items() if k != "_flat_weight_refs"}
    state.update(_all_weights=[[0]], num_layers=2000, _parameters={}, _flat_weights=[])
    state["_flat_weights_names"] = []
    monkeypatch.setattr(torch.nn.LSTM, "__getstate__", lambda self: state, raising=False)
    data = pickle.dumps(lstm, protocol=4)
    assert len(pickle.loads(data)._flat_weights_names) == 2000 * 4  # the control: it looped
    with pytest.raises(UntrustedPickleError, match="_all_weights must be lists"):
        if line == "audit and guard":
            assert skorch_loadfix.untrusted_globals(io.BytesIO(data)) != {}
        skorch_loadfix.load(io.BytesIO(data))
    assert type(skorch_loadfix.load(io.BytesIO(legit))) is torch.nn.LSTM


def test_optimizer_groups_shared_through_the_memo_are_refused(line):
    """Adam.__setstate__ loops over every group's params: M shared groups of N params would
    cost M x N from a file of M + N items."""
    params = [torch.nn.Parameter(torch.zeros(1))]
    optimizer = torch.optim.Adam(params)
    group = optimizer.param_groups[0]
    optimizer.param_groups = [group] * 50
    data = pickle.dumps(optimizer)
    assert len(pickle.loads(data).param_groups) == 50  # the control: it loads, looping
    with pytest.raises(UntrustedPickleError, match="must be distinct"):
        if line == "audit and guard":
            assert skorch_loadfix.untrusted_globals(io.BytesIO(data)) != {}
        skorch_loadfix.load(io.BytesIO(data))


def test_a_tuple_shared_at_every_level_is_refused_before_it_is_hashed(line):
    """Hashing visits a shared item each time: 40 levels of (t, t) are 2**40 visits, from a
    file of a few hundred bytes (memo GETs). Its unfolded size is bounded by the bytes read."""
    key: tuple = ()
    for _ in range(40):
        key = (key, key)
    # {key: None}, written without hashing the key here: protocol 2's opcodes, no frames
    data = b"\x80\x02}" + pickle.dumps(key, protocol=2)[2:-1] + b"Ns."
    assert len(data) < 1000  # the control: what the file costs, against 2**40 to hash
    with pytest.raises(UntrustedPickleError, match="unfolds to more items"):
        if line == "audit and guard":
            assert skorch_loadfix.untrusted_globals(io.BytesIO(data)) != {}
        skorch_loadfix.load(io.BytesIO(data))


def test_a_deep_tuple_is_refused_through_a_namedtuple_too(line):
    """A namedtuple the table allows (_ImputerTriplet) is a tuple: its height counts."""
    chain: tuple = ()
    for _ in range(30):
        for _ in range(9):
            chain = (chain,)
        chain = _ImputerTriplet(chain, 0, 0)
    data = pickle.dumps({"x": chain}, protocol=4)
    assert pickle.loads(data)  # the control: it loads, 300 deep
    with pytest.raises(UntrustedPickleError, match="nest at most 100 deep"):
        if line == "audit and guard":
            assert skorch_loadfix.untrusted_globals(io.BytesIO(data)) != {}
        skorch_loadfix.load(io.BytesIO(data))
