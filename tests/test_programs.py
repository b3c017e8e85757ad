"""Random opcode programs over the policy's own table, at the outer pickle and in a net's blob.

Whatever a program does, loaded with ``load()``: no refused audit event fires, no marker
appears, no allowed class or function is changed for the rest of the process, and the only
exceptions are ``pickle.UnpicklingError`` and its subclasses. And the two lines agree: what
``untrusted_globals()`` passes, the restricted unpickler alone does not refuse.

The programs call what is on the stack (REDUCE, NEWOBJ, OBJ, INST), BUILD into it and
SETITEM/APPEND into it, whatever it is, and go through the memo: the moves a gadget chain
is made of. Strings on offer are the attribute names such chains look up or shadow.
"""

from __future__ import annotations

import io
import pickle
import types
from pathlib import Path

import pytest
import torch
from audit_recorder import recording
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from models import fit

import skorch_loadfix
from skorch_loadfix import UntrustedPickleError
from skorch_loadfix.formats import BLOB, dumps_state
from skorch_loadfix.safe.hook import guarding
from skorch_loadfix.safe.policy import Refused, policy, table
from skorch_loadfix.safe.readers import Reader
from skorch_loadfix.safe.verifier import OUTER, unreadable

MARKER = Path(__file__).resolve().parent / ".property-marker"  # never written unless code ran
# Refused names, so that the programs also test what the two lines do with them.
REFUSED = [
    "builtins.getattr",
    "sklearn.metrics._scorer._cached_call",
    "skorch.utils._identity",
    "skorch.utils._TorchLoadUnpickler",
    "torch.jit.load",
]


def allowed() -> dict[str, object]:
    """Every name in the policy's table that resolves in this install, with its object."""
    found, default = {}, policy()
    for full in sorted(table()):
        try:
            found[full] = default.entry(*full.rsplit(".", 1), importing=True)[1]
        except Refused:
            continue  # not in this install (an old scorer class, a removed skorch name)
    return found


ALLOWED = allowed()
NAMES = [tuple(full.rsplit(".", 1)) for full in [*ALLOWED, *REFUSED]]
# The first optimizer a process builds imports torch._dynamo and wraps its class's step:
# once, whoever calls it. A process that trains has done it; so does this one, up front.
torch.optim.Adam([torch.zeros(1, requires_grad=True)])
STRINGS = [
    "__getattribute__", "__globals__", "__builtins__", "__dict__", "__class__", "__init__",
    "__sklearn_tags__", "__reduce_ex__", "__setstate__", "exec", "eval", "open", "system",
    "on_epoch_begin", "predict", "x", f"open({str(MARKER)!r}, 'w').close()", f"touch {MARKER}",
    "profile_hook_step", "_patch_step_function", "keys", "_build_f", "step", "f8",
]  # fmt: skip

# (opcode bytes, items it needs on top, items it leaves): checked against the stack as built.
STACK_OPS = {
    "REDUCE": (pickle.REDUCE, 2, 1),
    "NEWOBJ": (pickle.NEWOBJ, 2, 1),
    "BUILD": (pickle.BUILD, 2, 1),
    "SETITEM": (pickle.SETITEM, 3, 1),
    "APPEND": (pickle.APPEND, 2, 1),
    "TUPLE1": (pickle.TUPLE1, 1, 1),
    "TUPLE2": (pickle.TUPLE2, 2, 1),
    "TUPLE3": (pickle.TUPLE3, 3, 1),
    "POP": (pickle.POP, 1, 0),
    "DUP": (pickle.DUP, 1, 2),
}
CONSTANTS = {
    "None": pickle.NONE,
    "int": b"K\x01",
    "dict": pickle.EMPTY_DICT,
    "list": pickle.EMPTY_LIST,
    "tuple": pickle.EMPTY_TUPLE,
}


def _text(value: str) -> bytes:
    return b"V" + value.encode("raw_unicode_escape") + b"\n"


_global = st.tuples(st.just("GLOBAL"), st.sampled_from(NAMES))
_string = st.tuples(st.just("STRING"), st.sampled_from(STRINGS))
_call = st.tuples(st.sampled_from(["REDUCE", "REDUCE", "NEWOBJ", "BUILD"]), st.none())
_memo = st.tuples(st.sampled_from(["PUT", "GET"]), st.integers(0, 3))
_atom = st.one_of(
    st.sampled_from(NAMES).map(lambda name: ("GLOBAL", name)),
    st.sampled_from(STRINGS).map(lambda text: ("STRING", text)),
    st.sampled_from(sorted(CONSTANTS)).map(lambda const: ("CONST", const)),
    st.integers(0, 3).map(lambda index: ("GET", index)),
)
# A whole call, f(*args), f a global or a memo entry (a call result): how chains are built.
_whole_call = st.tuples(
    st.one_of(
        st.sampled_from(NAMES).map(lambda name: ("GLOBAL", name)),
        st.integers(0, 3).map(lambda index: ("GET", index)),
    ),
    st.lists(_atom, max_size=4),
).map(lambda call: [call[0], ("MARK", None), *call[1], ("TUPLE", None), ("REDUCE", None)])
# A whole BUILD, into a global or a memo entry: a state dict of names and atoms.
_whole_build = st.tuples(
    st.one_of(
        st.sampled_from(NAMES).map(lambda name: ("GLOBAL", name)),
        st.integers(0, 3).map(lambda index: ("GET", index)),
    ),
    st.lists(st.tuples(st.sampled_from(STRINGS).map(lambda t: ("STRING", t)), _atom), max_size=3),
).map(
    lambda build: [
        build[0],
        ("CONST", "dict"),
        *[item for key, value in build[1] for item in (key, value, ("SETITEM", None))],
        ("BUILD", None),
    ]
)
# Weighted towards what chains are made of: globals, names, calls, BUILDs, memo.
op = st.one_of(
    _whole_call,
    _whole_call,
    _whole_build,
    _global,
    _string,
    _call,
    _memo,
    _global,
    _string,
    _call,
    _memo,
    st.tuples(st.just("CONST"), st.sampled_from(sorted(CONSTANTS))),
    st.tuples(st.sampled_from(sorted(STACK_OPS)), st.none()),
    st.tuples(st.just("MARK"), st.none()),
    st.tuples(st.sampled_from(["TUPLE", "OBJ"]), st.none()),
    st.tuples(st.just("INST"), st.sampled_from(NAMES)),
)


def flatten(ops: list) -> list[tuple[str, object]]:
    return [item for entry in ops for item in (entry if isinstance(entry, list) else [entry])]


def program(ops: list[tuple[str, object]]) -> bytes:
    """A well-formed pickle from ``ops``: each op whose operands are missing is left out."""
    frames, memo, out = [0], set(), [b"\x80\x02"]
    for name, arg in ops:
        depth = frames[-1]
        if name == "GLOBAL":
            out.append(b"c%s\n%s\n" % tuple(part.encode() for part in arg))
        elif name == "STRING":
            out.append(_text(arg))
        elif name == "CONST":
            out.append(CONSTANTS[arg])
        elif name == "MARK":
            out.append(pickle.MARK)
            frames.append(0)
            continue
        elif name in ("TUPLE", "OBJ", "INST"):
            if len(frames) == 1 or (name == "OBJ" and depth == 0):
                continue
            frames.pop()
            op_bytes = {"TUPLE": pickle.TUPLE, "OBJ": pickle.OBJ}.get(name)
            out.append(op_bytes or b"i%s\n%s\n" % tuple(part.encode() for part in arg))
        elif name == "PUT":
            if depth == 0:
                continue
            out.append(b"p%d\n" % arg)
            memo.add(arg)
            continue
        elif name == "GET":
            if arg not in memo:
                continue
            out.append(b"g%d\n" % arg)
        else:
            code, needs, leaves = STACK_OPS[name]
            if depth < needs:
                continue
            out.append(code)
            frames[-1] += leaves - needs
            continue
        frames[-1] += 1
    while len(frames) > 1:  # close every open mark
        frames.pop()
        out.append(pickle.TUPLE)
        frames[-1] += 1
    out += [pickle.POP] * max(0, frames[-1] - 1) + [pickle.NONE] * (frames[-1] == 0)
    return b"".join(out) + pickle.STOP


def snapshot() -> dict[str, dict[str, object]]:
    """The attributes of every allowed class and function, to see (and undo) a patch."""
    return {
        full: dict(vars(obj))
        for full, obj in ALLOWED.items()
        if isinstance(obj, (type, types.FunctionType))
    }


def changes(before, after) -> list[str]:
    changed = []
    for full, attributes in before.items():
        now = after[full]
        if now.keys() != attributes.keys() or any(now[k] is not v for k, v in attributes.items()):
            changed.append(full)
            obj = ALLOWED[full]  # undo it, for the examples that follow
            for attribute in set(now) - set(attributes):
                delattr(obj, attribute)
            for attribute, value in attributes.items():
                if now.get(attribute) is not value:
                    setattr(obj, attribute, value)
    return changed


@pytest.fixture(scope="module")
def net():
    return fit()


PROPERTY = settings(
    max_examples=500,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.generate, Phase.shrink],  # not explain: its sys.settrace would be refused
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def guard_alone(data: bytes) -> str:
    """The restricted unpickler without the audit before it: "loaded", "refused" or "failed"."""
    reader = Reader(None, {}, "test", policy())
    try:
        with guarding("test"), unreadable():
            reader.unpickler(io.BytesIO(data), OUTER).load()
    except UntrustedPickleError:
        return "refused"
    except pickle.UnpicklingError:
        return "failed"  # a call the rules allow failed on its arguments, a short stack, ...
    return "loaded"


def check(data: bytes) -> list[str]:
    """What went wrong loading ``data``; empty when the properties hold."""
    problems, before = [], snapshot()
    try:
        audit_passes = skorch_loadfix.untrusted_globals(io.BytesIO(data)) == {}
    except pickle.UnpicklingError:
        audit_passes = False  # unreadable to the audit
    if audit_passes and guard_alone(data) == "refused":
        problems.append("the audit passed what the unpickler alone refuses")
    MARKER.unlink(missing_ok=True)
    with recording() as refused:
        try:
            skorch_loadfix.load(io.BytesIO(data))
        except pickle.UnpicklingError:
            pass
        except Exception as error:
            problems.append(f"raised {type(error).__name__}: {error}")
    problems += [f"audit event {event}({args})" for event, args in refused]
    problems += [f"changed {name}" for name in changes(before, snapshot())]
    if MARKER.exists():
        problems.append("the marker appeared")
        MARKER.unlink()
    return problems


@PROPERTY
@given(ops=st.lists(op, max_size=30).map(flatten))
def test_outer_pickle_programs(ops):
    data = program(ops)
    assert check(data) == [], pickle_listing(data)


@PROPERTY
@given(ops=st.lists(op, max_size=30).map(flatten))
def test_blob_programs(net, ops):
    data = program(ops)
    assert check(dumps_state(net, {**net.__getstate__(), BLOB: data})) == [], pickle_listing(data)


def pickle_listing(data: bytes) -> str:
    """The program, disassembled, for the failure message."""
    import pickletools

    listing = io.StringIO()
    try:
        pickletools.dis(data, listing)
    except Exception as error:  # the listing is only a help
        listing.write(f"(not listable: {error})")
    return listing.getvalue()
