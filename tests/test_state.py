"""State checked where it lands (issue 16, item 2).

Three routes put keys into an object's ``__dict__`` after the rules of BUILD ran: a net's
blob merged into its state, skorch 0.11's ``_kwargs`` copied in by legacy, and a container
the file keeps in its memo and fills after a ``functools.partial`` kept it. The effects:
``__module__`` and ``__reduce_ex__`` make a later ``pickle.dumps`` import a module the file
chose (``imported_marker`` here, ``antigravity`` to an attacker), and ``predict`` shadowed
by ``print``. Each is refused (or neutralized) by ``load()``, strict and ``apply()`` with
``weights_only`` on a ``torch.save`` blob, the audit agrees, and a control shows it live.
"""

import copy
import functools
import io
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import skorch.utils
import torch
from conftest import TESTS, run_python
from corpus_reference import corpus_input
from models import X, y
from skorch import NeuralNetClassifier
from skorch.callbacks import EpochTimer

import skorch_loadfix
from skorch_loadfix import UntrustedPickleError
from skorch_loadfix.formats import BLOB, WRITERS, dumps, dumps_state
from skorch_loadfix.legacy import PREFIXES
from skorch_loadfix.safe import verifier
from skorch_loadfix.safe.snapshot import snapshot
from skorch_loadfix.safe.unpickler import MERGED

MARKER_MODULE = "imported_marker"
DEV_2022 = TESTS / "data" / "dev" / "net_cuda-2022-07-28-a0f5b5e.pkl"
BLOB_LEVEL, OUTER = verifier.BLOB_LEVEL, verifier.OUTER


def reimports() -> dict:
    """What makes pickling an object import ``imported_marker``: its ``__reduce_ex__``
    returns ``'xkcd'``, a global's name, so pickle imports the object's ``__module__``."""
    indexing = functools.partial(skorch.utils._indexing_other, ["xkcd"] * 8)
    return {"__module__": MARKER_MODULE, "__reduce_ex__": indexing}


SHADOWS = {"predict": print}
KEYS = {"reimports": reimports(), "shadows": SHADOWS}


def unfitted(cls=NeuralNetClassifier) -> NeuralNetClassifier:
    """An uninitialized net of torch's own modules: its blob holds nothing of its own."""
    return cls(torch.nn.Linear, module__in_features=4, module__out_features=2, verbose=0)


class UnseenNet(NeuralNetClassifier):
    """A user's net class, allowed by name: the audit sees it only if its module is imported."""


def saved(obj, writer: str) -> bytes:
    file = io.BytesIO()
    if writer == "torch.save":
        torch.save(obj, file)
    else:
        pickle.dump(obj, file)
    return file.getvalue()


def net_file(blob: bytes, cls=NeuralNetClassifier, **state) -> bytes:
    net = unfitted(cls)
    return dumps_state(net, {**net.__getstate__(), **state, BLOB: blob})


def in_blob(keys: dict, writer: str, cls=NeuralNetClassifier) -> bytes:
    """Route 1: the keys in the net's blob, which restore() merges into its state."""
    return net_file(saved(keys, writer), cls)


def in_kwargs(keys: dict, writer: str) -> bytes:
    """Route 2: the keys in skorch 0.11's ``_kwargs``, which legacy copies into the state."""
    net = unfitted()
    state = {k: v for k, v in net.__getstate__().items() if k != "_params_to_validate"}
    return dumps_state(net, {**state, "_kwargs": keys, BLOB: saved({}, writer)})


def loaded_as(mode: str, data: bytes):
    """``data`` unpickled as a user would: guarded, or trusted (the control)."""
    if mode == "load()":
        return skorch_loadfix.load(io.BytesIO(data))
    skorch_loadfix.apply(strict=mode == "strict")
    try:
        with skorch_loadfix.torch_load_kwargs(weights_only=mode != "trusted"):
            return pickle.loads(data)
    finally:
        skorch_loadfix.revert()


def modes(writer: str) -> list[str]:
    """The guarded modes: apply() without strict restricts a torch.save blob only."""
    return ["load()", "strict", *(["weights_only"] if writer == "torch.save" else [])]


def imports_marker_when_pickled(data: bytes, mode: str, tmp_path: Path) -> bool:
    """Load ``data`` in ``mode`` in a fresh process, pickle what it returns: was the marker
    module imported? (An import happens once per process.)"""
    path, marker = tmp_path / "file.pkl", tmp_path / "imported"
    path.write_bytes(data)
    code = """
        import contextlib, pickle, sys, warnings
        from test_state import loaded_as
        warnings.simplefilter("ignore")
        obj = loaded_as(sys.argv[2], open(sys.argv[1], "rb").read())
        with contextlib.suppress(Exception):  # it finds no 'xkcd' there, after the import
            pickle.dumps(obj)
    """
    result = run_python(code, str(path), mode, SKORCH_LOADFIX_MARKER=str(marker))
    assert result.returncode == 0, result.stderr
    return marker.exists()


ROUTES = {"blob": in_blob, "_kwargs": in_kwargs}
LEVEL = {"blob": BLOB_LEVEL, "_kwargs": OUTER}


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("keys", KEYS)
def test_keys_merged_after_build_are_refused(route, writer, keys, line):
    data = ROUTES[route](KEYS[keys], writer)
    if line == "audit and guard":
        refused = skorch_loadfix.untrusted_globals(io.BytesIO(data))
        assert list(refused) == [MERGED] and f"in the {LEVEL[route]}" in refused[MERGED]
    for mode in modes(writer):
        with pytest.raises(UntrustedPickleError, match=MERGED) as error:
            loaded_as(mode, data)
        expected = "'__module__'" if keys == "reimports" else ".predict"
        assert expected in error.value.refused[MERGED], mode
        assert f"in the {LEVEL[route]}" in error.value.refused[MERGED], mode


def test_a_net_class_the_audit_cannot_see_is_judged_by_its_keys(monkeypatch):
    """Allowed by name and not imported, the audit can't know the class's methods: it still
    refuses dunders; the loader, which has the class, refuses shadowing too."""
    allow = [f"{__name__}.UnseenNet"]
    files = {keys: in_blob(found, "pickle", UnseenNet) for keys, found in KEYS.items()}
    with monkeypatch.context() as unimported:
        unimported.delitem(sys.modules, __name__)
        assert MERGED in skorch_loadfix.untrusted_globals(
            io.BytesIO(files["reimports"]), allow=allow
        )
        assert skorch_loadfix.untrusted_globals(io.BytesIO(files["shadows"]), allow=allow) == {}
    for data in files.values():
        with pytest.raises(UntrustedPickleError, match=MERGED):
            skorch_loadfix.load(io.BytesIO(data), allow=allow)
    assert skorch_loadfix.untrusted_globals(io.BytesIO(files["shadows"]), allow=allow)


@pytest.mark.parametrize("route", ROUTES)
def test_shadowed_predict_runs_the_files_callable_unguarded(route, capsys):
    """The control: the trusted reading installs the key, and predict calls print."""
    net = loaded_as("trusted", ROUTES[route](SHADOWS, "pickle"))
    net.predict("called")
    assert capsys.readouterr().out == "called\n"


@pytest.mark.parametrize("route", ROUTES)
def test_reimports_run_code_when_the_net_is_pickled_unguarded(route, tmp_path):
    """The control: the victim's own ``pickle.dumps(net)`` imports the file's module."""
    assert imports_marker_when_pickled(ROUTES[route](reimports(), "pickle"), "trusted", tmp_path)


def test_kwargs_that_is_no_dict_is_refused_before_its_items_are_called(capsys, line):
    """legacy reads ``_kwargs.items()`` (skorch 0.12-0.14 ``keys()``): an instance whose
    ``items`` the file chose would be called. Refused first, by the audit and the loader;
    ValueError where trusted."""
    timer = EpochTimer()
    # attributes: EpochTimer has neither
    timer.items = timer.keys = functools.partial(print, "called")
    net = unfitted()
    state = {k: v for k, v in net.__getstate__().items() if k != "_params_to_validate"}
    data = dumps_state(net, {**state, "_kwargs": timer, BLOB: saved({}, "torch.save")})
    # the control: the call is live
    if "_kwargs" in NeuralNetClassifier.__setstate__.__code__.co_consts:
        with pytest.raises(TypeError):  # skorch 0.12-0.14 call keys() and read what it returns
            pickle.loads(data)
    else:
        pickle.loads(data).__dict__["_kwargs"].items()  # later ones keep _kwargs as it is
    assert capsys.readouterr().out == "called\n"
    if line == "audit and guard":
        refused = skorch_loadfix.untrusted_globals(io.BytesIO(data))
        assert "must be a dict" in refused[MERGED]
    for mode in modes("torch.save"):
        with pytest.raises(UntrustedPickleError, match="_kwargs must be a dict"):
            loaded_as(mode, data)
    with pytest.raises(ValueError, match="_kwargs is a EpochTimer"):
        loaded_as("trusted", data)
    assert capsys.readouterr().out == ""


# -- Route 3: a container changed through the memo after it was checked and kept -----------


def _put(index: int) -> bytes:
    return b"r" + index.to_bytes(4, "little")


def _get(index: int) -> bytes:
    return b"j" + index.to_bytes(4, "little")


TO_TENSOR = b"cskorch.utils\nto_tensor\n"


def changed_partial() -> bytes:
    """``partial(to_tensor)`` BUILT with empty keywords and dict, both kept in the memo; then
    SETITEMs through the memo: keywords get ``print`` (which BUILD refuses for a function),
    the dict gets ``reimports()``. Opcodes, protocol 2, no PROTO or STOP."""
    inner = pickle.dumps(reimports()["__reduce_ex__"], 2)[2:-1]
    return (
        b"cfunctools\npartial\n"
        + TO_TENSOR
        + b"\x85R("
        + TO_TENSOR
        + b")}"
        + _put(90001)
        + b"}"
        + _put(90002)
        + b"tb"
        + _get(90001)
        + b"Vdevice\ncbuiltins\nprint\ns0"
        + _get(90002)
        + f"V__module__\nV{MARKER_MODULE}\nsV__reduce_ex__\n".encode()
        + inner
        + b"s0"
    )


def old_torch_stream(object_pickle: bytes) -> bytes:
    """A ``torch.save`` stream as torch < 1.6 wrote it, around a pickle that names no
    storage: the magic number, protocol, sys_info, the object, its (no) storage keys."""
    from torch import serialization

    sys_info = {
        "protocol_version": serialization.PROTOCOL_VERSION,
        "little_endian": sys.byteorder == "little",
        "type_sizes": {"short": 2, "int": 4, "long": 4},
    }
    head = (serialization.MAGIC_NUMBER, serialization.PROTOCOL_VERSION, sys_info)
    return b"".join(pickle.dumps(x, 2) for x in head) + object_pickle + pickle.dumps([], 2)


def partial_files() -> dict[str, bytes]:
    blob = b"\x80\x02}(Vhelper_\n" + changed_partial() + b"u."
    return {
        "outer pickle": b"\x80\x02" + changed_partial() + b".",
        "pickle blob": net_file(blob),
        "torch.save blob": net_file(old_torch_stream(blob)),
    }


def helper(loaded):
    return loaded if isinstance(loaded, functools.partial) else loaded.helper_


@pytest.mark.parametrize("where", partial_files())
def test_a_kept_container_changed_later_is_not_what_the_partial_keeps(where, line):
    """The partial keeps the copy that was checked: the memo's original, changed later,
    is no longer its keywords or its dict, so pickling the net imports nothing."""
    data = partial_files()[where]
    if line == "audit and guard":
        assert skorch_loadfix.untrusted_globals(io.BytesIO(data)) == {}
    guarded = ["load()"] if where == "outer pickle" else modes(where.split()[0])
    for mode in guarded:
        loaded = loaded_as(mode, data)
        assert helper(loaded).keywords == {} and vars(helper(loaded)) == {}, mode
        pickle.dumps(loaded)
        assert MARKER_MODULE not in sys.modules


@pytest.mark.parametrize("where", ["outer pickle", "pickle blob"])
def test_a_kept_container_changed_later_runs_code_unguarded(where, tmp_path):
    """The control: unguarded, the partial holds print and the file's dunders, and the
    victim's ``pickle.dumps`` imports the file's module."""
    data = partial_files()[where]
    changed = helper(loaded_as("trusted", data))
    assert changed.keywords == {"device": print} and "__reduce_ex__" in vars(changed)
    assert imports_marker_when_pickled(data, "trusted", tmp_path)


def changed_argument() -> bytes:
    """``collections.deque([inner])``, ``inner`` an empty list kept in the memo, the call's
    arguments checked as plain data; then ``print`` appended to ``inner`` through the memo."""
    deque = b"\x80\x02ccollections\ndeque\n(](]" + _put(90003) + b"etR"
    return deque + _get(90003) + b"cbuiltins\nprint\na0."


def test_call_arguments_changed_later_are_not_what_the_call_kept(line):
    data = changed_argument()
    assert list(pickle.loads(data)) == [[print]]  # the control: the deque holds print
    if line == "audit and guard":
        assert skorch_loadfix.untrusted_globals(io.BytesIO(data)) == {}
    assert list(skorch_loadfix.load(io.BytesIO(data))) == [[]]


def test_snapshot_keeps_sharing_and_cycles_without_recursion():
    shared = [1]
    cycle: list = [shared]
    cycle.append((cycle, frozenset({("a", 1)})))
    copied = snapshot({"x": shared, "y": cycle})
    assert copied["x"] is copied["y"][0] and copied["x"] is not shared
    assert copied["y"][1][0] is copied["y"] and copied["y"] is not cycle
    assert copied == {"x": [1], "y": copied["y"]} and copied["y"][1][1] == {("a", 1)}
    deep: list = []
    node = deep
    for _ in range(100_000):
        node.append([])
        node = node[0]
    snapshot(deep)
    with pytest.raises(RecursionError):  # the control: a recursive copy fails on it
        copy.deepcopy(deep)


# -- Legacy: a name skorch itself wrote is translated, not refused -------------------------


def test_the_2022_development_versions_prefixes_key_is_translated():
    """skorch between 0.11 and 0.12 (July 2022) wrote ``__cuda_dependent_attributes_prefixes__``
    beside its blob. Every mode reads the file, and the key becomes what it meant:
    ``criterion__weight``, moved into the blob, is a parameter to validate again."""
    data = DEV_2022.read_bytes()
    assert PREFIXES.encode() in data
    assert skorch_loadfix.untrusted_globals(io.BytesIO(data)) == {}
    with pytest.warns(UserWarning):  # skorch's DeviceWarning: no CUDA here
        trusted = loaded_as("trusted", data)
    for mode in ["load()", "strict", "weights_only"]:
        with pytest.warns(UserWarning):
            net = loaded_as(mode, data)
        assert PREFIXES not in vars(net)
        assert net._params_to_validate == {"optimizer", "criterion__weight"}
        np.testing.assert_array_equal(
            net.predict_proba(corpus_input()), trusted.predict_proba(corpus_input())
        )


def test_the_prefixes_key_unpatched_stays_on_the_net(monkeypatch):
    """The control: unpatched skorch keeps the dunder as an attribute."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.warns(UserWarning):
        net = pickle.loads(DEV_2022.read_bytes())
    assert vars(net)[PREFIXES] == ["module_", "criterion_", "optimizer_"]


def test_the_prefixes_key_must_be_the_list_skorch_wrote():
    net = unfitted()
    data = dumps_state(net, {**net.__getstate__(), PREFIXES: "module_"})
    with pytest.raises(pickle.UnpicklingError, match="not the list of names skorch wrote"):
        skorch_loadfix.load(io.BytesIO(data))


def test_a_blob_key_that_is_no_name_is_refused_beside_the_prefixes(line):
    data = net_file(saved({1: "one"}, "pickle"), **{PREFIXES: ["module_"]})
    with pytest.raises(UntrustedPickleError, match="the key 1 is not an attribute name"):
        skorch_loadfix.load(io.BytesIO(data))


def test_keys_a_legit_net_merges_pass():
    """No false block: a fitted net of either writer, its blob's keys merged and checked."""
    net = unfitted().set_params(max_epochs=1).fit(X, y)
    for writer in WRITERS:
        data = dumps(net, writer)
        for mode in modes(writer):
            loaded = loaded_as(mode, data)
            np.testing.assert_array_equal(loaded.predict_proba(X), net.predict_proba(X))
