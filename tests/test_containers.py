"""The containers people save nets in, read by load(), untrusted_globals() and inspect:
``joblib.dump`` (plain and compressed), ``torch.save(net)``, and files that hold no net.

joblib's arrays follow their wrapper as raw bytes, so ``pickle.load`` cannot read a joblib
file at all (the control in each round trip): what reads it is the restricted unpickler's
joblib reading, checked here against ``joblib.load`` itself, and attacked at each of its
checks with joblib's own wrapper in a changed state.
"""

import importlib.util
import io
import pickle
import pickletools
import tracemalloc
import zipfile
import zlib

import joblib
import numpy as np
import pytest
import torch
from joblib.numpy_pickle import NumpyArrayWrapper
from models import X, fit, y
from payloads import BLOB_LEVEL, placed
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from skorch import NeuralNetClassifier
from skorch.toy import MLPModule

import skorch_loadfix
from skorch_loadfix import UntrustedPickleError
from skorch_loadfix.__main__ import main
from skorch_loadfix.content import NotAPickledNet
from skorch_loadfix.demo_model import Block, Model

ALLOW = [Model, Block]
COMPRESSIONS = ["zlib", "gzip", "bz2", "lzma", "xz"]
HAS_LZ4 = importlib.util.find_spec("lz4") is not None
if HAS_LZ4:
    COMPRESSIONS.append("lz4")


@pytest.fixture(scope="module")
def net():
    return fit()


@pytest.fixture(scope="module")
def pipe():
    module = NeuralNetClassifier(MLPModule, module__input_units=X.shape[1], max_epochs=2)
    return Pipeline([("scale", StandardScaler()), ("net", module.set_params(verbose=0))]).fit(X, y)


def both_read(file, allow=()):
    """load() and the audit on one file (a path, or bytes): the audit must be clean where
    load() returns."""
    opened = (lambda: io.BytesIO(file)) if isinstance(file, bytes) else (lambda: file)
    assert skorch_loadfix.untrusted_globals(opened(), allow=allow) == {}
    return skorch_loadfix.load(opened(), allow=allow)


# -- joblib ------------------------------------------------------------------------------------


def trusted_joblib_load(path):
    """joblib's own reading, as a user who trusts the file does it (skorch <= 1.1 cannot read
    its own nets on torch >= 2.6 without the patch)."""
    skorch_loadfix.apply()
    try:
        with skorch_loadfix.torch_load_kwargs(weights_only=False):
            return joblib.load(path)
    finally:
        skorch_loadfix.revert()


@pytest.mark.parametrize("compress", [None, *COMPRESSIONS])
@pytest.mark.parametrize("what", ["net", "pipe"])
def test_joblib_file_loads_and_predicts_as_joblib_load_does(tmp_path, request, what, compress):
    saved = request.getfixturevalue(what)
    path = tmp_path / "model.joblib"
    joblib.dump(saved, path, compress=(compress, 3) if compress else 0)
    with pytest.raises(Exception):  # noqa: B017 - the control: no plain pickle
        pickle.loads(path.read_bytes())
    loaded = both_read(path, allow=ALLOW)
    expected = trusted_joblib_load(path).predict_proba(X)
    np.testing.assert_array_equal(loaded.predict_proba(X), expected)
    np.testing.assert_array_equal(loaded.predict_proba(X), saved.predict_proba(X))


@pytest.mark.skipif(HAS_LZ4, reason="with lz4 installed, lz4 files load (in COMPRESSIONS)")
def test_lz4_file_without_lz4_says_what_to_install(tmp_path):
    path = tmp_path / "model.joblib"
    path.write_bytes(b"\x04\x22\x4d\x18" + bytes(32))
    with pytest.raises(pickle.UnpicklingError, match="needs the lz4 package; pip install lz4"):
        skorch_loadfix.load(path)


ARRAYS = {
    "float32": np.arange(6, dtype="float32").reshape(2, 3),
    "float16": np.arange(6, dtype="float16"),
    "float64 Fortran": np.asfortranarray(np.arange(12.0).reshape(3, 4)),
    "int8": np.arange(-3, 3, dtype="int8"),
    "uint64": np.arange(5, dtype="uint64"),
    "bool": np.array([True, False, True]),
    "complex64": np.arange(3, dtype="complex64") * 1j,
    "big-endian": np.arange(4, dtype=">f8"),
    "str": np.array(["ab", "c", "def"]),
    "bytes": np.array([b"x", b"yz"]),
    "0-d": np.array(3.5),
    "empty": np.zeros((0, 3), dtype="float32"),
    "3-d Fortran": np.asfortranarray(np.arange(24, dtype="int32").reshape(2, 3, 4)),
}


@pytest.mark.parametrize(
    ("compress", "protocol"), [(None, 2), (None, 3), (None, 4), (None, 5), ("gzip", 4)]
)
def test_joblib_arrays_of_every_plain_dtype_and_order(tmp_path, compress, protocol):
    """Protocols 4 and 5 frame the pickle: joblib ends a frame before each array."""
    path = tmp_path / "arrays.joblib"
    joblib.dump(ARRAYS, path, compress=(compress, 3) if compress else 0, protocol=protocol)
    loaded, expected = both_read(path), joblib.load(path)
    for name, array in loaded.items():
        want = expected[name]
        assert type(array) is np.ndarray and array.dtype == want.dtype, name
        assert array.dtype.isnative, name  # as joblib.load makes it
        np.testing.assert_array_equal(array, ARRAYS[name], err_msg=name)
        assert array.flags.owndata and array.flags.writeable, name
        assert array.flags.f_contiguous == want.flags.f_contiguous, name


def test_object_arrays_are_read_by_the_rules(tmp_path):
    """joblib pickles an object array after its wrapper: its globals go through the policy."""
    path = tmp_path / "objects.joblib"
    joblib.dump({"ok": np.array(["a", 1, None], dtype=object)}, path)
    np.testing.assert_array_equal(both_read(path)["ok"], np.array(["a", 1, None], dtype=object))

    joblib.dump({"bad": np.array([zlib.compress], dtype=object)}, path)
    assert joblib.load(path)["bad"][0] is zlib.compress  # the control: joblib resolves it
    assert "zlib.compress" in skorch_loadfix.untrusted_globals(path)
    with pytest.raises(UntrustedPickleError, match="zlib.compress: not allowed"):
        skorch_loadfix.load(path)


# Attacks on the wrapper: joblib's own NumpyArrayWrapper, pickled with a changed state.
HONEST = np.arange(4, dtype="float64")


def wrapped(after: bytes, protocol: int = 2, **state) -> bytes:
    """A joblib stream of one array: the wrapper (``state`` changed), then ``after``."""
    wrapper = NumpyArrayWrapper(np.ndarray, HONEST.shape, "C", HONEST.dtype)
    wrapper.__dict__.update(state)
    body = pickle.dumps(wrapper, protocol=protocol)
    assert body.endswith(b"b.")
    return body[:-1] + after + b"."


ARRAY_BYTES = b"\x00" + HONEST.tobytes()  # no padding, then the bytes


def refused(data: bytes, error: type = UntrustedPickleError, match: str = "") -> None:
    """load() and the audit both refuse ``data``: the audit lists it or cannot read it."""
    with pytest.raises(error, match=match):
        skorch_loadfix.load(io.BytesIO(data))
    try:
        found = skorch_loadfix.untrusted_globals(io.BytesIO(data))
    except pickle.UnpicklingError as unreadable:
        assert error is not UntrustedPickleError, unreadable
    else:
        assert found and error is UntrustedPickleError, found


def test_honest_wrapper_stream_loads_as_joblib_reads_it():
    """The control of every attack below: the same stream, unchanged, loads."""
    data = wrapped(ARRAY_BYTES)
    np.testing.assert_array_equal(joblib.load(io.BytesIO(data)), HONEST)
    np.testing.assert_array_equal(both_read(data), HONEST)


@pytest.mark.parametrize(
    ("state", "why"),
    [
        ({"subclass": dict}, "subclass must be one of"),
        ({"shape": (-1,)}, "shape must be a tuple of ints"),
        ({"shape": [4]}, "shape must be a tuple of ints"),
        ({"shape": (0, 1 << 62)}, "larger than numpy makes an array"),
        ({"shape": (0,) * 65}, "larger than numpy makes an array"),
        ({"order": "K"}, "order must be 'C' or 'F'"),
        ({"numpy_array_alignment_bytes": 1 << 20}, "alignment must be an int"),
        ({"read": print}, "state is a dict of"),
        ({"dtype": np.dtype([("x", "<f8")])}, "dtype"),
        ({"dtype": np.dtype("M8[ns]")}, "dtype must be made in this load"),
        ({"dtype": np.dtype("V8")}, "dtype must be made in this load"),
        ({"dtype": np.dtype("f8", metadata={"a": 1})}, "the one numpy pickles for '<f8'"),
    ],
    ids=lambda v: repr(v)[:40],
)
def test_wrapper_states_joblib_would_follow_are_refused(state, why):
    refused(wrapped(ARRAY_BYTES, **state), match=why)


def test_dtype_descriptions_are_what_numpy_makes():
    """A str dtype's item size is a C int in numpy: one past it, numpy refuses the name, so
    the description (which the audit checks too) must."""
    from skorch_loadfix.safe.described import dtype_named

    largest = dtype_named("U536870911")
    assert largest is not None and largest.size == np.dtype("<U536870911").itemsize  # control
    with pytest.raises(TypeError):
        np.dtype("<U536870912")
    assert dtype_named("U536870912") is None


def test_array_announced_larger_than_the_file_is_refused_before_allocating():
    data = wrapped(ARRAY_BYTES[:-8])
    refused(data, pickle.UnpicklingError, "announces 32 bytes, but the file holds 25")
    huge = wrapped(ARRAY_BYTES, shape=(1 << 40,))
    refused(huge, pickle.UnpicklingError, f"announces {8 << 40} bytes")


def test_padding_longer_than_the_alignment_is_refused():
    refused(wrapped(b"\x40" + bytes(64) + HONEST.tobytes()), pickle.UnpicklingError, "padding")


def test_object_dtype_never_reads_raw_bytes():
    """An object wrapper's bytes must be a pickle the rules accept, never pointers."""
    data = wrapped(b"\x00" + b"A" * 8, dtype=np.dtype("O"))
    refused(data, pickle.UnpicklingError, "not a readable pickle")


def _memo(data: bytes, after: str) -> int:
    """The memo index a protocol-2 stream puts the first ``after`` opcode's result under."""
    ops = list(pickletools.genops(data))
    at = next(i for i, (op, _, _) in enumerate(ops) if op.name == after)
    return next(arg for op, arg, _ in ops[at:] if op.name == "BINPUT")


def test_wrapper_is_built_once():
    """A second BUILD through the memo would read more bytes into a checked array."""
    data, opcodes = wrapped(ARRAY_BYTES), wrapped(b"")
    again = bytes([ord("h"), _memo(opcodes, "NEWOBJ"), ord("h"), _memo(opcodes, "EMPTY_DICT")])
    refused(data[:-1] + b"0" + again + b"b" + ARRAY_BYTES + b".", match="BUILD on")


def test_wrapper_is_never_called():
    call = b"\x80\x02cjoblib.numpy_pickle\nNumpyArrayWrapper\nK\x01\x85R."
    refused(call, match="never called with arguments")


def test_array_bytes_inside_a_frame_are_refused():
    """joblib ends the frame before an array: bytes after a BUILD mid-frame are opcodes."""
    wrapper = NumpyArrayWrapper(np.ndarray, (0,), "C", HONEST.dtype)
    data = pickle.dumps([wrapper, 1], protocol=4)
    refused(data, match="after its wrapper's frame")


def test_wrapper_below_the_outer_pickle_is_blocked(net):
    """Only a whole file is joblib's: in a net's blob the name is what it is, blocked."""
    data = placed(wrapped(b""), BLOB_LEVEL, net, net.__getstate__())
    refused(data, match="joblib.numpy_pickle.NumpyArrayWrapper")


def gzipped(data: bytes) -> bytes:
    import gzip

    return gzip.compress(data)


def peak_while(read) -> int:
    tracemalloc.start()
    try:
        read()
    except pickle.UnpicklingError:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_compressed_stream_costs_what_it_yields_not_what_it_announces():
    """A 16 GiB array, or a 1 TiB bytes, announced in a small gzip stream: refused as
    truncated, with memory for what the stream held. The control: a real 16 MiB array
    costs its 16 MiB, so the measure sees numpy's allocations."""
    honest = np.zeros(2 << 20)  # 16 MiB
    real = wrapped(b"\x00" + honest.tobytes(), shape=honest.shape)
    assert peak_while(lambda: skorch_loadfix.load(io.BytesIO(gzipped(real)))) >= 16 << 20
    for bomb in (
        wrapped(b"\x00" + bytes(1 << 20), shape=(1 << 31,)),
        b"\x80\x04\x8e" + (1 << 40).to_bytes(8, "little") + bytes(1 << 20),  # BINBYTES8
    ):
        file = io.BytesIO(gzipped(bomb))
        with pytest.raises(pickle.UnpicklingError, match="truncated|EOFError"):
            skorch_loadfix.load(file)
        assert peak_while(lambda f=file: skorch_loadfix.load(io.BytesIO(f.getvalue()))) < (8 << 20)


def test_corrupt_compressed_stream_is_one_clear_error():
    data = bytearray(gzipped(wrapped(ARRAY_BYTES)))
    data[20] ^= 0xFF
    refused(bytes(data), pickle.UnpicklingError, "gzip stream")


# -- torch.save(net) ---------------------------------------------------------------------------


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "stream (torch < 1.6)"])
def test_torch_save_of_a_net_loads(tmp_path, net, zipped):
    path = tmp_path / "net.pt"
    torch.save(net, path, _use_new_zipfile_serialization=zipped)
    try:  # the control: pickle reads no net from it (the old stream's first pickle is an int)
        plain = pickle.loads(path.read_bytes())
    except pickle.UnpicklingError as error:
        plain = error
    assert not isinstance(plain, NeuralNetClassifier)
    loaded = both_read(path, allow=ALLOW)
    np.testing.assert_array_equal(loaded.predict_proba(X), net.predict_proba(X))


def test_torch_save_zip_with_a_record_torch_save_never_writes_is_refused(tmp_path, net):
    """A zip torch.load would hand to torch.jit.load: the same checks as for a blob."""
    path = tmp_path / "net.pt"
    torch.save(net, path)
    with zipfile.ZipFile(path, "a") as archive:
        folder = archive.namelist()[0].partition("/")[0]
        archive.writestr(f"{folder}/constants.pkl", pickle.dumps(()))
    refused(path.read_bytes(), match="torch.save never writes this record")


def run(capsys, *args):
    status = main(list(map(str, args)))
    return status, *capsys.readouterr()


ALLOW_FLAGS = ["--allow", "skorch_loadfix.demo_model.Model"]
ALLOW_FLAGS += ["--allow", "skorch_loadfix.demo_model.Block"]


def test_inspect_says_torch_load_with_weights_only_refuses_a_whole_net(tmp_path, net, capsys):
    path, weights = tmp_path / "net.pt", tmp_path / "weights.pt"
    torch.save(net, path)
    torch.save(net.module_.state_dict(), weights)
    with pytest.raises(pickle.UnpicklingError, match="NeuralNetClassifier"):
        torch.load(path, weights_only=True)  # what inspect must say
    torch.load(weights, weights_only=True)  # and the state_dict loads: the control
    status, out, _ = run(capsys, "inspect", path, *ALLOW_FLAGS)
    assert status == 0
    assert "file written by: torch.save of the whole object (not a state_dict)" in out
    assert "loads with torch.load(weights_only=True): no, it refuses " in out
    assert "weights_only=True): no, it refuses skorch.classifier.NeuralNetClassifier, " in out
    assert "loads with skorch_loadfix.load(): yes" in out
    status, out, _ = run(capsys, "inspect", weights)
    assert "loads with torch.load(weights_only=True): yes" in out


@pytest.mark.parametrize(
    ("compress", "said"),
    [(None, "joblib.dump (uncompressed)"), ("xz", "joblib.dump with compress='xz'")],
)
def test_inspect_names_joblib_files(tmp_path, net, capsys, compress, said):
    path = tmp_path / "net.joblib"
    joblib.dump(net, path, compress=(compress, 3) if compress else 0)
    status, out, _ = run(capsys, "inspect", path, *ALLOW_FLAGS)
    assert status == 0 and f"file written by: {said}\n" in out
    assert "loads with skorch_loadfix.load(): yes" in out


def test_inspect_allow_is_load_allow(tmp_path, net, capsys):
    path = tmp_path / "net.pkl"
    path.write_bytes(pickle.dumps(net))
    _, out, _ = run(capsys, "inspect", path)
    assert "loads with skorch_loadfix.load(): no, it refuses" in out  # the control
    _, out, _ = run(capsys, "inspect", path, *ALLOW_FLAGS)
    assert "loads with skorch_loadfix.load(): yes" in out
    status, out, err = run(capsys, "inspect", path, "--allow", "os.system")
    assert (status, out) == (2, "") and "--allow os.system: on the hard blocklist" in err


# -- files that hold no net ----------------------------------------------------------------------


def _npy() -> bytes:
    file = io.BytesIO()
    np.save(file, HONEST)
    return file.getvalue()


def _npz() -> bytes:
    file = io.BytesIO()
    np.savez(file, a=HONEST)
    return file.getvalue()


def _zip() -> bytes:
    file = io.BytesIO()
    with zipfile.ZipFile(file, "w") as archive:
        archive.writestr("model/net.pkl", b"...")
    return file.getvalue()


def _safetensors() -> bytes:
    header = b'{"w":{"dtype":"F64","shape":[4],"data_offsets":[0,32]}}'
    return len(header).to_bytes(8, "little") + header + HONEST.tobytes()


NO_NETS = {
    "empty": (lambda: b"", "an empty file (0 bytes): nothing was saved in it"),
    "text": (lambda: b"hello, world\n", "a text file: it holds no pickled net"),
    "binary": (lambda: bytes(range(256)), "a file of no format skorch-loadfix knows"),
    "npy": (_npy, "a NumPy .npy array: it holds one array, not a net; read it with numpy.load"),
    "npz": (_npz, "a NumPy .npz archive: it holds arrays, not a net"),
    "zip": (_zip, "a zip archive that torch.save did not write: "),
    "safetensors": (_safetensors, "a safetensors file: it holds only tensors (a state_dict)"),
    "joblib < 0.10": (lambda: b"ZF0x" + zlib.compress(b"."), "a compressed file of joblib < 0.10"),
}


@pytest.mark.parametrize("kind", NO_NETS)
def test_a_file_that_is_no_pickled_net_is_named_with_what_to_do(tmp_path, capsys, kind):
    make, said = NO_NETS[kind]
    path = tmp_path / "model.pkl"
    path.write_bytes(make())
    with pytest.raises(Exception) as plain:  # noqa: B017 - the control: the reader's own error
        pickle.loads(path.read_bytes())
    assert said not in str(plain.value)
    for read in (skorch_loadfix.load, skorch_loadfix.untrusted_globals):
        with pytest.raises(NotAPickledNet) as error:
            read(path)
        assert str(error.value).startswith(said) and "\n" not in str(error.value)
    status, out, err = run(capsys, "inspect", path)
    assert (status, out, err) == (2, "", f"skorch-loadfix inspect: {path}: {error.value}\n")
    status, out, err = run(capsys, "upgrade", path, tmp_path / "out.pkl")
    assert (status, err) == (1, f"skorch-loadfix upgrade: {path}: {error.value}\n")


def test_protocol_0_pickles_are_not_text(tmp_path):
    """Protocols 0 and 1 are printable: a failed read names text, a good one loads."""
    data = pickle.dumps({"a": [1, 2.5, "x"]}, protocol=0)
    with pytest.raises(NotAPickledNet, match="a text file"):  # the control: it is text
        skorch_loadfix.load(io.BytesIO(data[:-2]))
    assert both_read(data) == {"a": [1, 2.5, "x"]}
    # Framed as a pickle (it ends with STOP), a broken one keeps the pickle's own error.
    with pytest.raises(pickle.UnpicklingError, match="not a readable pickle"):
        skorch_loadfix.load(io.BytesIO(b"(I1\nt\x00."))
