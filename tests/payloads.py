"""Malicious pickles, harmless here: what they would do is create a marker file.

Each payload is a whole pickle. ``placed()`` puts it at one level of a real pickled
net: the file itself (the outer pickle), the net's cuda-attributes blob, or a tensor
stream nested in the blob.
"""

from __future__ import annotations

import functools
import io
import os
import pickle
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torchscript_payload

from skorch_loadfix.formats import BLOB, dumps_state

OUTER, BLOB_LEVEL, TENSORS = "outer pickle", "cuda-attributes blob", "tensor streams"
NESTED_STREAM = "REDUCE on torch.storage._load_from_bytes"
EXT_CODE = 240  # a copyreg extension code the tests register for os.system


@dataclass(frozen=True)
class Payload:
    family: str
    refused: str  # the global an error must name: the first the file asks for
    data: bytes
    levels: tuple[str, ...] = (OUTER, BLOB_LEVEL, TENSORS)
    hits: bool = True  # loaded unguarded, it creates the marker (no network, no browser)
    nested: bool = False  # the global sits in a tensor stream the payload carries

    def level_refused(self, placed_at: str) -> str:
        return TENSORS if self.nested else placed_at

    def refused_as(self, placed_at: str) -> str:
        """What a refusal names: its global, but a stream placed inside a tensor stream is
        refused there, before its global is read (torch writes no stream in a stream)."""
        return NESTED_STREAM if self.nested and placed_at == TENSORS else self.refused


class Reduce:
    """Pickles as ``func(*args)``, the way every ``__reduce__`` payload does."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _arg(value: bytes | str) -> bytes:
    """An argument: opcodes as they are, a str as a protocol-0 unicode string."""
    return value if isinstance(value, bytes) else b"V" + value.encode("raw_unicode_escape") + b"\n"


def _text(value: str) -> bytes:
    """A str argument that may hold newlines: BINUNICODE."""
    encoded = value.encode("utf-8", "surrogatepass")
    return b"X" + len(encoded).to_bytes(4, "little") + encoded


def _g(module: str, name: str) -> bytes:
    """GLOBAL module.name, the protocol-0 spelling."""
    return f"c{module}\n{name}\n".encode()


def _call(func: bytes, *args: bytes | str) -> bytes:
    return func + b"(" + b"".join(map(_arg, args)) + b"tR"


def _torch_save(obj, **kwargs) -> bytes:
    file = io.BytesIO()
    torch.save(obj, file, **kwargs)
    return file.getvalue()


def marker_code(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').close()"


def payloads(marker: Path) -> list[Payload]:
    """Every family; the runpy one runs ``script.py`` beside ``marker``, written by the caller."""
    return [*named(marker), *gadgets(marker), *archives(marker), *shadows()]


def named(marker: Path) -> list[Payload]:
    """Families that name a dangerous global outright."""
    sh = f"touch {marker}"
    py = marker_code(marker)
    script = marker.with_name("script.py")
    system = Reduce(os.system, sh)
    os_module = _call(_g("importlib", "import_module"), "os")
    url = "http://127.0.0.1:9/"
    stack_global = _arg("posix") + _arg("system") + b"\x93"
    popen = _arg("subprocess") + _arg("Popen") + b"\x93"
    return [
        *(
            Payload(
                f"__reduce__ protocol {protocol}", "posix.system", pickle.dumps(system, protocol)
            )
            for protocol in range(6)
        ),
        Payload("GLOBAL", "os.system", _call(_g("os", "system"), sh) + b"."),
        Payload("INST", "os.system", b"(" + _arg(sh) + b"i" + _g("os", "system")[1:] + b"."),
        Payload("OBJ", "os.system", b"(" + _g("os", "system") + _arg(sh) + b"o."),
        Payload("STACK_GLOBAL", "posix.system", b"\x80\x04" + stack_global + _arg(sh) + b"\x85R."),
        Payload(
            "NEWOBJ_EX",
            "subprocess.Popen",
            b"\x80\x04" + popen + _arg(sh) + b"\x85}\x92.",
            hits=False,
        ),
        Payload("EXT1", "os.system", b"\x80\x02\x82" + bytes([EXT_CODE]) + _arg(sh) + b"\x85R."),
        Payload("builtins.eval", "builtins.eval", _call(_g("builtins", "eval"), py) + b"."),
        Payload("__builtin__.exec", "builtins.exec", _call(_g("__builtin__", "exec"), py) + b"."),
        Payload(
            "getattr(__import__('os'), 'system')",
            "builtins.__import__",  # getattr binds a table class's own methods only
            _call(
                _call(
                    _g("builtins", "getattr"), _call(_g("builtins", "__import__"), "os"), "system"
                ),
                sh,
            )
            + b".",
        ),
        Payload(
            "subprocess", "subprocess.getoutput", _call(_g("subprocess", "getoutput"), sh) + b"."
        ),
        Payload("runpy", "runpy.run_path", _call(_g("runpy", "run_path"), str(script)) + b"."),
        Payload(
            "code",
            "code.InteractiveConsole",
            _call(_g("code", "InteractiveConsole")) + b".",
            hits=False,
        ),
        Payload("cProfile", "cProfile.run", _call(_g("cProfile", "run"), py) + b"."),
        Payload(
            "timeit",
            "timeit.main",
            _call(_g("timeit", "main"), b"(" + _arg("-n") + _arg("1") + _arg(py) + b"l") + b".",
        ),
        Payload("bdb", "bdb.Bdb", _call(_g("bdb", "Bdb")) + b".", hits=False),
        Payload("importlib", "importlib.import_module", os_module + b".", hits=False),
        Payload(
            "pkgutil.resolve_name",
            "pkgutil.resolve_name",
            _call(_call(_g("pkgutil", "resolve_name"), "os:system"), sh) + b".",
        ),
        Payload(
            "pydoc.locate",
            "pydoc.locate",
            _call(_call(_g("pydoc", "locate"), "os.system"), sh) + b".",
        ),
        Payload(
            "webbrowser", "webbrowser.open", _call(_g("webbrowser", "open"), url) + b".", hits=False
        ),
        Payload(
            "socket",
            "socket.create_connection",
            _call(_g("socket", "create_connection"), b"(" + _arg("127.0.0.1") + b"I9\nt") + b".",
            hits=False,
        ),
        Payload(
            "urllib",
            "urllib.request.urlopen",
            _call(_g("urllib.request", "urlopen"), url) + b".",
            hits=False,
        ),
        Payload(
            "operator.attrgetter",
            "operator.attrgetter",
            _call(_call(_call(_g("operator", "attrgetter"), "system"), os_module), sh) + b".",
        ),
        Payload(
            "operator.methodcaller",
            "operator.methodcaller",
            _call(_call(_g("operator", "methodcaller"), "system", sh), os_module) + b".",
        ),
        Payload(
            "functools.partial(os.system, ...)",
            "os.system",
            _call(_call(_g("functools", "partial"), _g("os", "system"), sh)) + b".",
        ),
        Payload(
            "nested pickle.loads",
            "_pickle.loads",
            pickle.dumps(Reduce(pickle.loads, pickle.dumps(system))),
        ),
        Payload(
            "nested torch.load",
            "torch.serialization.load",
            pickle.dumps(Reduce(torch.load, str(marker.with_name("inner.pt")))),
            hits=False,
        ),
        Payload(
            "nested _load_from_bytes",
            "posix.system",
            pickle.dumps(Reduce(torch.storage._load_from_bytes, _torch_save(system))),
            nested=True,
        ),
        Payload(
            "dotted name reaching torch.load",
            "torch.nn.modules.module.torch.load",
            _call(_g("torch.nn.modules.module", "torch.load"), str(marker)) + b".",
            hits=False,
        ),
        Payload(
            "copyreg._reconstructor",
            "subprocess.Popen",  # _reconstructor creates a class the policy names only
            _call(
                _g("copyreg", "_reconstructor"),
                _g("subprocess", "Popen"),
                _g("builtins", "object"),
                b"N",
            )
            + b".",
            hits=False,
        ),
        Payload(
            "torch zip, malicious data.pkl",
            "posix.system",
            _torch_save(system),
            (BLOB_LEVEL, TENSORS),
        ),
        Payload(
            "legacy torch stream",
            "posix.system",
            _torch_save(system, _use_new_zipfile_serialization=False),
            (BLOB_LEVEL, TENSORS),
        ),
        Payload(
            "a __main__ module",
            "numpy.f2py.__main__.main",
            _call(_g("numpy.f2py.__main__", "main")) + b".",
            hits=False,
        ),
        Payload(
            "pip",
            "pip._internal.cli.main.main",
            _call(_g("pip._internal.cli.main", "main")) + b".",
            hits=False,
        ),
        Payload("venv", "venv.create", _call(_g("venv", "create"), str(marker)) + b"."),
        Payload(
            "ctypes.CDLL",
            "ctypes.CDLL",
            _call(_g("ctypes", "CDLL"), "libc.so.6") + b".",
            hits=False,
        ),
    ]


def _dict(*items: bytes | str) -> bytes:
    """A protocol-0 dict of key, value, key, value..."""
    return b"(d" + b"".join(
        _arg(k) + _arg(v) + b"s" for k, v in zip(items[::2], items[1::2], strict=True)
    )


def _build(target: bytes, state: bytes) -> bytes:
    return target + state + b"b."


def _inst(module: str, name: str) -> bytes:
    """INST: an instance created with no arguments, as NEWOBJ would."""
    return f"(i{module}\n{name}\n".encode()


TIMER = _g("skorch.callbacks.logging", "EpochTimer")
OBJECT_STATE = b"(I3\nV|\nNNNI-1\nI-1\nI63\nt"  # numpy's own state for the object dtype
PRINT = _g("builtins", "print")


def gadgets(marker: Path) -> list[Payload]:
    """Gadgets that name only allowed globals (as the old allowlist had them) and reach
    further through what calls return or what BUILD writes into."""
    system = _torch_save(Reduce(os.system, f"touch {marker}"))
    cached_call = _g("sklearn.metrics._scorer", "_cached_call")
    timer_state = _dict("on_epoch_begin", PRINT)
    return [
        Payload(
            "getitem gadget: _cached_call(d, None, k) is d[k], then called",
            "sklearn.metrics._scorer._cached_call",
            _call(_call(cached_call, _dict("k", PRINT), b"N", "k"), "called") + b".",
            hits=False,
        ),
        Payload(
            "a call result used as a callable",
            "REDUCE on an instance of collections.OrderedDict",
            _call(_call(_g("collections", "OrderedDict"))) + b".",
            hits=False,
        ),
        Payload(
            "calling a constant",
            "REDUCE on skorch.utils.noop",
            _call(_g("skorch.utils", "noop")) + b".",
            hits=False,
        ),
        Payload(
            "BUILD on a function",
            "BUILD on skorch.utils.noop",
            _build(_g("skorch.utils", "noop"), _dict("__sklearn_tags__", PRINT)),
            hits=False,
        ),
        Payload(
            "BUILD on a class",
            "BUILD on skorch.callbacks.logging.EpochTimer",
            _build(TIMER, timer_state),
            hits=False,
        ),
        Payload(
            "class patching through _identity",
            "skorch.utils._identity",
            _build(_call(_g("skorch.utils", "_identity"), TIMER), b"(N" + timer_state + b"t"),
            hits=False,
        ),
        Payload(
            "BUILD on a module", "torch.nn", _build(_g("torch", "nn"), timer_state), hits=False
        ),
        Payload(
            "BUILD on a builtin", "BUILD on builtins.print", _build(PRINT, timer_state), hits=False
        ),
        Payload(
            "dunder key in BUILD state",
            "BUILD on an instance of skorch.callbacks.logging.EpochTimer",
            _build(_inst("skorch.callbacks.logging", "EpochTimer"), _dict("__class__", PRINT)),
            hits=False,
        ),
        Payload(
            "slotstate in BUILD state",
            "BUILD on an instance of skorch.callbacks.logging.EpochTimer",
            _build(_inst("skorch.callbacks.logging", "EpochTimer"), b"(N" + timer_state + b"t"),
            hits=False,
        ),
        Payload(
            "bytearray tensor stream",
            "REDUCE on torch.storage._load_from_bytes",
            _call(
                _g("torch.storage", "_load_from_bytes"),
                _call(_g("builtins", "bytearray"), _text(system.decode("latin1")), "latin1"),
            )
            + b".",
        ),
        Payload(
            "_TorchLoadUnpickler through a call",
            "skorch.utils._TorchLoadUnpickler",
            _call(_g("functools", "partial"), _g("skorch.utils", "_TorchLoadUnpickler")) + b".",
            hits=False,
        ),
        Payload(
            "defaultdict calling its factory later",
            "REDUCE on collections.defaultdict",
            _call(_g("collections", "defaultdict"), PRINT) + b".",
            hits=False,
        ),
        Payload(
            "partial of a loader function",
            "REDUCE on functools.partial",
            _call(_g("functools", "partial"), _g("torch._utils", "_rebuild_tensor_v2")) + b".",
            hits=False,
        ),
        Payload(
            "object-dtype scalar returning its argument",
            "REDUCE on numpy._core.multiarray.scalar",
            _call(
                _g("numpy.core.multiarray", "scalar"),
                _call(_g("numpy", "dtype"), "O8", b"I00\n", b"I01\n") + OBJECT_STATE + b"b",
                TIMER,
            )
            + b".",
            hits=False,
        ),
        Payload(
            "persistent id outside a torch stream",
            "BINPERSID on a builtins.tuple",
            b"(Vstorage\ntQ.",
            hits=False,
        ),
    ]


def victim(marker: Path) -> Path:
    """The existing file a TorchScript payload overwrites (it cannot create the marker)."""
    return marker.with_name("victim")


def archives(marker: Path) -> list[Payload]:
    """``torch.save`` zips that ``torch.load`` would not read as the loader's pickle: a blob or
    tensor stream only (the outer pickle is never a zip)."""
    system = pickle.dumps(Reduce(os.system, f"touch {marker}"), 2)
    return [
        Payload(
            "TorchScript archive: torch.load dispatches it to torch.jit.load",
            "constants.pkl",
            torchscript_payload.archive(str(victim(marker))),
            levels=(BLOB_LEVEL, TENSORS),
            hits=False,  # it overwrites victim(marker) instead: see test_untrusted
        ),
        Payload(
            "a second data.pkl: zipfile reads the last, torch the first",
            "archive/data.pkl",
            duplicate_data_pickle(_torch_save({}), system),
            levels=(BLOB_LEVEL, TENSORS),
        ),
        Payload(
            "a compressed data.pkl: torch.save stores every record, a zip bomb would not",
            "archive/data.pkl",
            deflated(_torch_save({}), system),
            levels=(BLOB_LEVEL, TENSORS),
        ),
        Payload(
            "a record torch.save never writes",
            "extra.pkl",
            with_records(_torch_save({}), {"extra.pkl": system}),
            levels=(BLOB_LEVEL, TENSORS),
            hits=False,  # torch itself never reads it
        ),
    ]


def with_records(archive: bytes, records: dict[str, bytes], *, first: bool = False) -> bytes:
    """``archive`` with ``records`` added in its folder: before its own, or after them."""
    source = zipfile.ZipFile(io.BytesIO(archive))
    folder = source.namelist()[0].partition("/")[0]
    out = io.BytesIO()
    added = [(f"{folder}/{name}", data) for name, data in records.items()]
    own = [(name, source.read(name)) for name in source.namelist()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name"
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as written:
            for name, data in [*added, *own] if first else [*own, *added]:
                written.writestr(name, data)
    return out.getvalue()


def deflated(archive: bytes, data_pickle: bytes) -> bytes:
    """``archive`` with ``data_pickle`` as its data.pkl, compressed (torch's reader inflates it)."""
    return replaced(archive, data_pickle, zipfile.ZIP_DEFLATED)


def replaced(archive: bytes, data_pickle: bytes, compression: int = zipfile.ZIP_STORED) -> bytes:
    """``archive`` with ``data_pickle`` as its data.pkl."""
    source = zipfile.ZipFile(io.BytesIO(archive))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as written:
        for name in source.namelist():
            if name.endswith("/data.pkl"):
                written.writestr(name, data_pickle, compression)
            else:
                written.writestr(name, source.read(name))
    return out.getvalue()


def duplicate_data_pickle(archive: bytes, evil: bytes) -> bytes:
    """``archive`` with ``evil`` as a first data.pkl: Python's zipfile reads the archive's own
    (the last of a name), torch's reader, given enough other records, the first."""
    for padding in range(40):
        pads = {f"pad{i}": b"" for i in range(padding)}
        candidate = with_records(with_records(archive, pads), {"data.pkl": evil}, first=True)
        if torch._C.PyTorchFileReader(io.BytesIO(candidate)).get_record("data.pkl") == evil:
            return candidate
    raise AssertionError("no layout in which torch reads the first data.pkl")


def _new(module: str, name: str) -> bytes:
    """``cls.__new__(cls)``: protocol 2 NEWOBJ."""
    return _g(module, name) + b")\x81"


def _bound(*items: bytes | str) -> bytes:
    """A protocol-2 dict of key, value, ...: EMPTY_DICT MARK ... SETITEMS."""
    return b"}(" + b"".join(map(_arg, items)) + b"u"


def _partial(module: str, name: str, args: bytes, kwargs: bytes) -> bytes:
    """``functools.partial(f)``, then BUILD with (f, args, kwargs, None)."""
    func = _g(module, name)
    return _g("functools", "partial") + b"(" + func + b"tR(" + func + args + kwargs + b"Ntb"


def step_patch() -> bytes:
    """Adam's ``__setstate__`` runs ``cls.step = self.profile_hook_step(cls.step)``: a BUILD
    key shadowing the staticmethod makes Adam.step an Identity, for every later Adam."""
    optimizer = b"\x80\x02" + _new("torch.optim.adam", "Adam")
    state = ["defaults", b"}", "param_groups", b"]", "state", b"}"]
    identity = _g("torch.nn.modules.linear", "Identity")
    return optimizer + _bound("profile_hook_step", identity, *state) + b"b."


ADAM = "BUILD on an instance of torch.optim.adam.Adam"


def defaults_call() -> bytes:
    """Optimizer.__setstate__ calls ``self.defaults.setdefault("differentiable", False)``:
    an EpochTimer as ``defaults`` with ``print`` as its attribute (no method to shadow)."""
    timer = _new("skorch.callbacks.logging", "EpochTimer") + _bound("setdefault", PRINT) + b"b"
    state = _bound("defaults", timer, "param_groups", b"]", "state", b"}")
    return b"\x80\x02" + _new("torch.optim.adam", "Adam") + state + b"b."


def shadows() -> list[Payload]:
    """BUILD keys that shadow a method the load itself calls, and a blob that is no dict."""
    state = ["defaults", b"}", "param_groups", b"]", "state", b"}"]
    setter = _partial(
        "skorch.setter",
        "optimizer_setter",
        b"("
        + _g("skorch.callbacks.training", "Checkpoint")
        + _arg("lr")
        + b"G?\xe0\x00\x00\x00\x00\x00\x00t",
        b"}",
    )
    called = _partial("builtins", "print", b"(Vcalled\nt", b"}")
    timer = _new("skorch.callbacks.logging", "EpochTimer")
    return [
        Payload("shadowing profile_hook_step patches Adam.step", ADAM, step_patch(), hits=False),
        Payload(
            "shadowing _patch_step_function calls a partial",
            ADAM,
            b"\x80\x02"
            + _new("torch.optim.adam", "Adam")
            + _bound("_patch_step_function", called, *state)
            + b"b.",
            hits=False,
        ),
        Payload(
            "an optimizer's defaults whose setdefault the file chose",
            ADAM,
            defaults_call(),
            hits=False,
        ),
        Payload(
            "a partial of a function with a class argument",
            "BUILD on an instance of functools.partial",
            b"\x80\x02" + setter + b".",
            hits=False,
        ),
        Payload(
            "shadowing IsotonicRegression._build_f",
            "BUILD on an instance of sklearn.isotonic.IsotonicRegression",
            b"\x80\x02"
            + _new("sklearn.isotonic", "IsotonicRegression")
            + _bound("_build_f", called, "X_thresholds_", "a", "y_thresholds_", "b")
            + b"b.",
            hits=False,
        ),
        Payload(
            "a blob that loads as no dict: restore() updates the state with it",
            "a net's blob that does not load as a dict",
            b"\x80\x02" + timer + _bound("keys", called) + b"b.",
            levels=(BLOB_LEVEL,),
            hits=False,
        ),
    ]


class _Stream:
    """Pickles as a tensor does when skorch >= 1.2 writes a blob: a nested torch stream."""

    def __init__(self, data: bytes):
        self.data = data

    def __reduce__(self):
        return torch.storage._load_from_bytes, (self.data,)


def placed(payload: bytes, level: str, net, state: dict) -> bytes:
    """A file with ``payload`` at ``level``; the rest is ``net`` with ``state`` (from its
    ``__getstate__``), as skorch pickles it."""
    if level == OUTER:
        return payload
    inner = payload if level == BLOB_LEVEL else pickle.dumps({"module_": _Stream(payload)})
    return dumps_state(net, {**state, BLOB: inner})


# -- C-backed objects given a state, and small files with large costs (issue 16) -------------

FRESH = {"O8": ("|", -1, -1, 63), "V8": ("|", 8, 1, 0), "f8": ("<", -1, -1, 0)}


def numpy_dtype(name: str) -> bytes:
    """``numpy.dtype(name, False, True)``, as numpy pickles a dtype before its BUILD."""
    return _call(_g("numpy", "dtype"), name, b"I00\n", b"I01\n")


def dtype_state(
    order: str, elsize: int, alignment: int, flags: int, fields: bytes = b"NN"
) -> bytes:
    """A version-3 dtype state: (3, order, subarray, names, fields, elsize, alignment, flags)."""
    return b"(I3\n" + _arg(order) + b"N" + fields + b"I%d\nI%d\nI%d\nt" % (elsize, alignment, flags)


def built_dtype(name: str, memo: int) -> bytes:
    """A dtype as numpy pickles it, kept in the memo at ``memo``."""
    return numpy_dtype(name) + b"p%d\n" % memo + dtype_state(*FRESH[name]) + b"b"


def frombuffer(data: bytes, memo: int, count: int = 1) -> bytes:
    """``_frombuffer(data, <the dtype at memo>, (count,), 'C')``, protocol 3 bytes."""
    raw = b"C" + bytes([len(data)]) + data
    func = _g("numpy.core.numeric", "_frombuffer")
    return func + b"(" + raw + b"g%d\n" % memo + b"(I%d\nt" % count + _arg("C") + b"tR"


def dag(levels: int) -> bytes:
    """A list of two lists of two lists ..., ``levels`` deep, shared through the memo: a few
    bytes a level, 2**levels paths to its bottom."""
    body = b"]q\x00"
    for level in range(1, levels + 1):
        body += b"0(h%sh%slq%s" % ((bytes([level - 1]),) * 2 + (bytes([level]),))
    return body


def nested(depth: int) -> bytes:
    """A list in a list in a list ..., ``depth`` deep."""
    return b"]" * depth + b"a" * (depth - 1)


def soundness() -> list[Payload]:
    """numpy's and torch's C code given a state the file chose, and small files that cost."""
    header = b"\x80\x03"
    object_dtype = built_dtype("O8", 0)
    return [
        Payload(
            "an object dtype's flags cleared: raw bytes read as an object pointer",
            "BUILD on an instance of numpy.dtype",
            header
            + numpy_dtype("O8")
            + b"p0\n"
            + dtype_state("|", -1, -1, 0)
            + b"b0"
            + frombuffer(b"A" * 8, 0)
            + b"g0\n"
            + dtype_state(*FRESH["O8"])
            + b"b0.",
            hits=False,
        ),
        Payload(
            "an object dtype's flags cleared: a scalar read from raw bytes",
            "BUILD on an instance of numpy.dtype",
            header
            + numpy_dtype("O8")
            + b"p0\n"
            + dtype_state("|", -1, -1, 0)
            + b"b0"
            + _g("numpy.core.multiarray", "scalar")
            + b"(g0\nC\x08AAAAAAAAtR"
            + b"g0\n"
            + dtype_state(*FRESH["O8"])
            + b"b0.",
            hits=False,
        ),
        Payload(
            "raw bytes read through an object dtype",
            "REDUCE on numpy._core.numeric._frombuffer",
            header + object_dtype + b"0" + frombuffer(b"A" * 8, 0) + b".",
            hits=False,
        ),
        Payload(
            "an item size grown under an array that uses the dtype",
            "BUILD on an instance of numpy.dtype",
            header
            + built_dtype("V8", 0)
            + b"0"
            + frombuffer(b"\0" * 8, 0)
            + b"g0\n"
            + dtype_state("|", 65536, 1, 0)
            + b"b0.",
            hits=False,
        ),
        Payload(
            "a field whose descriptor is an int",
            "BUILD on an instance of numpy.dtype",
            header
            + numpy_dtype("V8")
            + b"p0\n"
            + dtype_state("|", 8, 1, 16, b"(Vx\nt(dVx\n(I1\nI0\nts")
            + b"b0"
            + frombuffer(b"\0" * 8, 0)
            + b".",
            hits=False,
        ),
        Payload(
            "a dtype name numpy does not know",
            "REDUCE on numpy.dtype",
            header + numpy_dtype("bogus") + b".",
            hits=False,
        ),
        Payload(
            "an array given fewer bytes than its shape needs",
            "BUILD on an instance of numpy.ndarray",
            header
            + built_dtype("f8", 0)
            + b"0"
            + _call(
                _g("numpy.core.multiarray", "_reconstruct"),
                _g("numpy", "ndarray"),
                b"(I0\nt",
                b"C\x01b",
            )
            + b"(I1\n(I4096\ntg0\nI00\nC\x08AAAAAAAAtb.",
            hits=False,
        ),
        Payload(
            "bytearray(3 << 30): 3 GiB from a 32-byte file",
            "REDUCE on builtins.bytearray",
            b"\x80\x02cbuiltins\nbytearray\n\x8a\x05\x00\x00\x00\xc0\x00\x85R.",
            hits=False,
        ),
        Payload(
            "a deque whose maximum length is 2**62",
            "REDUCE on collections.deque",
            _call(_g("collections", "deque"), b"(l", b"L4611686018427387904L\n") + b".",
            hits=False,
        ),
        Payload(
            "a range beyond int64",
            "REDUCE on builtins.range",
            _call(_g("builtins", "range"), b"L1180591620717411303424L\n") + b".",
            hits=False,
        ),
        Payload(
            "a torch.Size with a negative size",
            "REDUCE on torch.Size",
            _call(_g("torch", "Size"), b"(I-1\nl") + b".",
            hits=False,
        ),
        Payload(
            "a torch.device torch reads as another",
            "REDUCE on torch.device",
            _call(_g("torch", "device"), "cuda:200") + b".",
            hits=False,
        ),
        Payload(
            "a 40-level DAG of shared lists as a dtype's state",
            "BUILD on an instance of numpy.dtype",
            header + numpy_dtype("f8") + b"(I3\nV<\n" + dag(40) + b"NNI-1\nI-1\nI0\ntb.",
            hits=False,
        ),
        Payload(
            "a 40-level DAG of shared lists as bytearray's argument",
            "REDUCE on builtins.bytearray",
            header + _g("builtins", "bytearray") + b"(" + dag(40) + b"tR.",
            hits=False,
        ),
        Payload(
            "lists nested 10000 deep as a deque's items",
            "REDUCE on collections.deque",
            header + _g("collections", "deque") + b"(" + nested(10000) + b"tR.",
            hits=False,
        ),
    ]


class _Pid:
    """Pickled as a persistent id, as torch pickles a storage."""

    def __init__(self, pid: tuple):
        self.pid = pid


class _PidPickler(pickle.Pickler):
    def persistent_id(self, obj):
        return obj.pid if isinstance(obj, _Pid) else None


class _Skimmer(pickle.Unpickler):
    """Reads a pickle for its length only: nothing it names is called."""

    def find_class(self, module, name):
        return lambda *args: None

    def persistent_load(self, pid):
        return None


@functools.cache
def _legacy_parts() -> tuple[bytes, list[int], str]:
    """A real torch < 1.6 stream of 16 floats, where each of its five pickles ends (magic
    number, protocol, sys_info, the object, storage keys; raw data after), and its key."""
    real = io.BytesIO()
    torch.save(torch.zeros(16), real, _use_new_zipfile_serialization=False)
    stream = io.BytesIO(real.getvalue())
    bounds, found = [0], None
    for _ in range(5):
        found = _Skimmer(stream).load()
        bounds.append(stream.tell())
    return real.getvalue(), bounds, found[0]


def legacy_stream(obj) -> bytes:
    """A torch.save stream of torch < 1.6 whose object pickle is ``obj`` (storages as
    ``_Pid``s), the real one's header, key list and raw data kept."""
    data, bounds, _ = _legacy_parts()
    pickled = io.BytesIO()
    _PidPickler(pickled, 2).dump(obj)
    return data[: bounds[3]] + pickled.getvalue() + data[bounds[4] :]


def storage(numel: int, kind=None, view=None) -> _Pid:
    return _Pid(("storage", kind or torch.FloatStorage, _legacy_parts()[2], "cpu", numel, view))


def tensor(stored: _Pid, offset: int = 0, size=(16,), stride=(1,), grad=False, *metadata) -> Reduce:
    import collections

    rebuild = torch._utils._rebuild_tensor_v2
    return Reduce(rebuild, stored, offset, size, stride, grad, collections.OrderedDict(), *metadata)


def shared_lists(levels: int) -> list:
    """Lists of two references to the list below, ``levels`` deep: pickle's memo shares them."""
    found: list = []
    for _ in range(levels):
        found = [found, found]
    return found


def torch_streams() -> list[Payload]:
    """Old torch streams whose storage ids or tensor arguments the file chose: at a net's
    blob (skorch <= 1.1 torch.loads it) and as a tensor stream."""
    levels = (BLOB_LEVEL, TENSORS)
    return [
        Payload(
            "a storage of 2**40 floats from a small stream",
            "BINPERSID on a builtins.tuple",
            legacy_stream(storage(1 << 40)),
            levels=levels,
            hits=False,
        ),
        Payload(
            "a tensor beyond its storage",
            "REDUCE on torch._utils._rebuild_tensor_v2",
            legacy_stream(tensor(storage(16), size=(1 << 20,))),
            levels=levels,
            hits=False,
        ),
        Payload(
            "a tensor at a negative offset",
            "REDUCE on torch._utils._rebuild_tensor_v2",
            legacy_stream(tensor(storage(16), offset=-8, size=(4,))),
            levels=levels,
            hits=False,
        ),
        Payload(
            "an int tensor that requires grad",
            "REDUCE on torch._utils._rebuild_tensor_v2",
            legacy_stream(tensor(storage(16, torch.IntStorage), grad=True)),
            levels=levels,
            hits=False,
        ),
        Payload(
            "a 40-level DAG of shared lists as a tensor's metadata",
            "REDUCE on torch._utils._rebuild_tensor_v2",
            legacy_stream(tensor(storage(16), 0, (16,), (1,), False, shared_lists(40))),
            levels=levels,
            hits=False,
        ),
        Payload(
            "a storage type torch does not know",
            "torch.XloatStorage",
            legacy_stream(storage(16)).replace(b"\nFloatStorage", b"\nXloatStorage"),
            levels=levels,
            hits=False,
        ),
    ]
