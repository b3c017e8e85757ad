"""Random opcode programs over allowlisted globals, loaded with load(): whatever they do,
no refused audit event fires, no marker appears, no allowlisted global is changed for the
rest of the process, and the only exceptions are pickle.UnpicklingError and subclasses.

The programs call what is on the stack (REDUCE, NEWOBJ, OBJ, INST), BUILD into it and
SETITEM/APPEND into it, whatever it is, and go through the memo: the moves a gadget chain
is made of. Strings on offer are the attribute names such chains look up.
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
from skorch_loadfix import allowlist
from skorch_loadfix.formats import BLOB, dumps_state

MARKER = Path(__file__).resolve().parent / ".property-marker"  # never written unless code ran

# Allowed by today's rules without being listed by name: classes of skorch, torch.nn and
# scikit-learn, any function of sklearn.metrics. The gadgets issue 9 found are among them.
RULE_ALLOWED = [
    "skorch.net.NeuralNet",
    "skorch.classifier.NeuralNetClassifier",
    "skorch.callbacks.EpochTimer",
    "skorch.callbacks.EpochScoring",
    "skorch.callbacks.PrintLog",
    "skorch.history.History",
    "skorch.dataset.ValidSplit",
    "torch.nn.modules.linear.Linear",
    "torch.nn.modules.container.Sequential",
    "torch.optim.adam.Adam",
    "sklearn.svm._classes.OneClassSVM",
    "sklearn.pipeline.Pipeline",
    "sklearn.metrics._scorer._cached_call",
    "sklearn.metrics._scorer._Scorer",
    "sklearn.metrics._classification.accuracy_score",
]


def allowlisted_names() -> list[tuple[str, str]]:
    """Every global the programs may name: the policy's own tables and the rule-allowed above,
    each kept only if today's policy allows it. After the loader rewrite, take the new
    policy's enumerated list here."""
    policy = allowlist.policy()
    candidates = sorted(allowlist._FUNCTIONS | allowlist._TYPES) + RULE_ALLOWED
    names = [tuple(full.rsplit(".", 1)) for full in candidates]
    return [(module, name) for module, name in names if policy.refusal(module, name) is None]


NAMES = allowlisted_names()
# The first optimizer a process builds imports torch._dynamo and wraps its class's step:
# once, whoever calls it. A process that trains has done it; so does this one, up front.
torch.optim.Adam([torch.zeros(1, requires_grad=True)])
STRINGS = [
    "__getattribute__", "__globals__", "__builtins__", "__dict__", "__class__", "__init__",
    "__sklearn_tags__", "__reduce_ex__", "__setstate__", "exec", "eval", "open", "system",
    "on_epoch_begin", "predict", "x", f"open({str(MARKER)!r}, 'w').close()", f"touch {MARKER}",
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
# Weighted towards what chains are made of: globals, names, calls, memo.
op = st.one_of(
    _whole_call,
    _whole_call,
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


def snapshot() -> dict[tuple[str, str], dict[str, object]]:
    """The attributes of every allowlisted global, to see (and undo) a class patched by BUILD."""
    found = {}
    for module, name in NAMES:
        obj = allowlist.policy().resolve(module, name)
        if isinstance(obj, (type, types.FunctionType)):
            found[(module, name)] = dict(vars(obj))
    return found


def changes(before, after) -> list[str]:
    changed = []
    for key, attributes in before.items():
        now = after[key]
        if now.keys() != attributes.keys() or any(now[k] is not v for k, v in attributes.items()):
            changed.append(".".join(key))
            obj = allowlist.policy().resolve(*key)  # undo it, for the examples that follow
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


def check(data: bytes) -> list[str]:
    """What went wrong loading ``data``; empty when the properties hold."""
    problems, before = [], snapshot()
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
