"""Random opcode programs over allowed globals, with calls, BUILD and SETITEM on arbitrary
stack items: the restricted unpickler alone raises only UnpicklingError, nothing process-wide
changes, and whatever the audit passes the unpickler does not refuse."""

import io
import pickle

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from skorch.callbacks import EpochTimer

import skorch_loadfix
from skorch_loadfix import UntrustedPickleError
from skorch_loadfix.safe.policy import policy
from skorch_loadfix.safe.readers import Reader
from skorch_loadfix.safe.verifier import OUTER, unreadable

GLOBALS = [
    ("builtins", "print"),
    ("builtins", "dict"),
    ("builtins", "set"),
    ("collections", "OrderedDict"),
    ("collections", "defaultdict"),
    ("functools", "partial"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("skorch.utils", "noop"),
    ("skorch.callbacks.logging", "EpochTimer"),
    ("skorch.history", "History"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch.storage", "_load_from_bytes"),
    ("torch.nn.modules.linear", "Linear"),
]
ATOMS = [
    b"N",
    b"I1\n",
    b"Vf8\n",
    b"Von_epoch_begin\n",
    b"V__class__\n",
    b"\x88",
    b"\x89",
    b"}",
    b"]",
    b")",
    b"C\x03abc",
]
OPS = [
    b"R",
    b"\x81",
    b"b",
    b"s",
    b"a",
    b"e",
    b"u",
    b"t",
    b"\x85",
    b"\x86",
    b"(",
    b"0",
    b"2",
    b"l",
    b"d",
    b"o",
    b"\x94",
    b"h\x00",
    b"\x92",
]
STEP = st.one_of(
    st.sampled_from(GLOBALS).map(lambda g: f"c{g[0]}\n{g[1]}\n".encode()),
    st.sampled_from(ATOMS),
    st.sampled_from(OPS),
)


def canary():
    return dict(vars(EpochTimer)), np.dtype("f8").str, print


def guard_alone(data: bytes) -> str:
    """The restricted unpickler without the audit before it: "loaded", "refused" or "failed"."""
    reader = Reader(None, {}, "test", policy())
    try:
        with unreadable():
            reader.unpickler(io.BytesIO(data), OUTER).load()
    except UntrustedPickleError:
        return "refused"
    except pickle.UnpicklingError:
        return "failed"  # a call the rules allow failed on its arguments, a short stack, ...
    return "loaded"


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(STEP, min_size=1, max_size=25))
def test_random_programs(steps):
    data = b"\x80\x04" + b"".join(steps) + b"."
    before = canary()
    try:
        refused = skorch_loadfix.untrusted_globals(io.BytesIO(data))
    except pickle.UnpicklingError:
        refused = None  # unreadable to the audit
    outcome = guard_alone(data)
    assert canary() == before
    if refused == {}:  # the audit is never more lenient than the loader
        assert outcome != "refused"
