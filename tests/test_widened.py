"""What the zoo widened, tried as an attacker would: each new entry does what real files need
and nothing more. Every case runs on both lines (the audit, and the loader with the audit off),
with a control: plain ``pickle.loads`` of the same bytes does what the rule prevents."""

import copyreg
import functools
import io
import pickle
import re

import numpy as np
import pytest
import torch
from payloads import Reduce, _g
from skorch.callbacks import EpochTimer, Freezer
from skorch.history import History
from torch import nn

import skorch_loadfix
from skorch_loadfix import UntrustedPickleError
from skorch_loadfix.safe.unpickler import StandIn


def refused(data: bytes, line: str, why: str) -> None:
    """Refused by the audit, and by the loader on its own, saying ``why``."""
    if line == "audit and guard":
        found = skorch_loadfix.untrusted_globals(io.BytesIO(data))
        assert any(why in text for text in found.values()), found
    with pytest.raises(UntrustedPickleError, match=re.escape(why)):
        skorch_loadfix.load(io.BytesIO(data))


class Called(Reduce):
    """Pickles as ``func(*args)`` and may itself be the func of another: its result is called."""

    def __call__(self, *args):
        raise NotImplementedError  # only pickled


def dumps(obj) -> bytes:
    return pickle.dumps(obj, protocol=2)


# -- bound methods: builtins.getattr's substitute -------------------------------------------------


def test_a_bound_method_skorch_stores_loads_and_is_stored():
    callback = Freezer("head.weight")
    callback.initialize()  # stores its bound _default_schedule, and partial(self._epoch_at)
    loaded = skorch_loadfix.load(io.BytesIO(dumps(callback)))
    assert loaded.schedule.__self__ is loaded and loaded.at.func.__self__ is loaded


@pytest.mark.parametrize(
    "target, name, why",
    [
        (nn.Linear(2, 2), "weight", "is not a method torch.nn.modules.linear.Linear defines"),
        (nn.Linear(2, 2), "__class__", "the name of a method"),
        (nn.Linear(2, 2), "T_destination", "is not a method"),  # a class attribute, no function
        # Methods skorch never stores: stored as module=, fit would call them with the
        # file's arguments (History.to_file writes a path the file chose).
        (nn.Linear(2, 2), "forward", "skorch stores only these bound methods"),
        (History(), "to_file", "skorch stores only these bound methods"),
        (nn.Linear, "mro", "an instance of a table class made in this load"),
        (np.float64, "fromhex", "an instance of a table class made in this load"),
    ],
)
def test_getattr_binds_only_a_table_class_method_to_an_instance_made_here(target, name, why, line):
    data = dumps(Reduce(getattr, target, name))
    pickle.loads(data)  # the control: the real getattr returns whatever the name holds
    refused(data, line, why)


def test_a_bound_method_is_never_called_during_the_load(line):
    data = dumps(Reduce(Called(getattr, Freezer("x"), "_epoch_at"), 0))
    with pytest.raises(AttributeError, match="history"):  # the control: the method ran
        pickle.loads(data)
    refused(data, line, "only what find_class returned under the policy is called")


def test_a_partial_of_a_bound_method_takes_plain_data_only(line):
    bound = Freezer("x")._epoch_at
    pickle.loads(dumps(functools.partial(bound, nn.ReLU())))  # the control
    refused(dumps(functools.partial(bound, nn.ReLU())), line, "must be data made in this load")
    skorch_loadfix.load(io.BytesIO(dumps(functools.partial(bound, epoch=1))))


# -- protocols 0 and 1: copyreg._reconstructor and builtins.object --------------------------------


def test_reconstructor_creates_only_table_classes_as_newobj(line):
    data = dumps(Reduce(copyreg._reconstructor, nn.Linear, list, [1]))
    with pytest.raises(TypeError):  # the control: it calls list.__new__ on another class
        pickle.loads(data)
    refused(data, line, "takes (a class the policy names, builtins.object, None)")
    data = dumps(Reduce(copyreg._reconstructor, nn.Linear, object, "state"))
    refused(data, line, "takes (a class the policy names, builtins.object, None)")


def test_a_list_subclass_at_protocol_0_gets_its_items():
    history = History([{"epoch": 1}])
    loaded = skorch_loadfix.load(io.BytesIO(pickle.dumps(history, protocol=0)))
    assert type(loaded) is History and loaded == history


def test_builtins_object_anywhere_else_is_an_inert_stand_in():
    data = pickle.dumps([object], protocol=0)
    assert pickle.loads(data) == [object]  # the control
    (found,) = skorch_loadfix.load(io.BytesIO(data))
    assert isinstance(found, StandIn) and not callable(found)


# -- sparse tensors -------------------------------------------------------------------------------


def test_a_sparse_tensor_is_built_with_torchs_invariant_checks():
    indices = torch.tensor([[0, 1 << 20]])  # the second index is far past the size
    bad = torch.sparse_coo_tensor(indices, torch.ones(2), (4,), check_invariants=False)
    data = dumps(bad)
    assert pickle.loads(data)._indices()[0, 1] == 1 << 20  # the control: torch defers the
    # check to the end of torch.load, which plain pickle never reaches
    assert skorch_loadfix.untrusted_globals(io.BytesIO(data)) == {}  # values the audit can't see
    with pytest.raises(pickle.UnpicklingError, match="index"):
        skorch_loadfix.load(io.BytesIO(data))
    good = torch.eye(3).to_sparse_csr()
    loaded = skorch_loadfix.load(io.BytesIO(dumps(good)))
    assert torch.equal(loaded.to_dense(), torch.eye(3))


def test_get_layout_names_sparse_layouts_only(line):
    from torch.serialization import _get_layout

    data = dumps(Reduce(_get_layout, "torch.strided"))
    assert pickle.loads(data) is torch.strided  # the control
    refused(data, line, "takes one of")


# -- masked arrays --------------------------------------------------------------------------------


def test_mareconstruct_takes_what_numpy_writes_only(line):
    from numpy.ma.core import _mareconstruct

    data = dumps(Reduce(_mareconstruct, np.ma.MaskedArray, np.ndarray, (1 << 16,), "b"))
    assert pickle.loads(data).shape == (1 << 16,)  # the control: numpy allocates that shape
    refused(data, line, "takes (numpy.ma.MaskedArray, numpy.ndarray, (0,), 'b') only")
    masked = np.ma.masked_array([1.0, 2.0], mask=[False, True])
    loaded = skorch_loadfix.load(io.BytesIO(dumps(masked)))
    np.testing.assert_array_equal(loaded.mask, masked.mask)
    assert loaded[0] == 1.0


def test_a_masked_array_is_never_created_bare(line):
    data = b"\x80\x02" + _g("numpy.ma", "MaskedArray") + b")\x81."  # NEWOBJ, no arguments
    assert type(pickle.loads(data)) is np.ma.MaskedArray  # the control
    refused(data, line, "created only by numpy.ma.core._mareconstruct")


# -- tensors with attributes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "attributes, why",
    [
        ({"add": 1}, "would hide torch.Tensor's"),
        ({"persistent": [1]}, "a dict of plain names and scalars"),
    ],
)
def test_tensor_attributes_are_scalars_that_hide_nothing(attributes, why, line):
    tensor = torch.ones(2)
    vars(tensor).update(attributes)
    data = dumps(tensor)
    assert all(getattr(pickle.loads(data), k) == v for k, v in attributes.items())  # control
    refused(data, line, why)
    tensor = torch.ones(2)
    vars(tensor).update(persistent=True, _is_buffer=True)
    assert skorch_loadfix.load(io.BytesIO(dumps(tensor))).persistent is True


def test_a_typed_tensor_rebuilds_with_rebuild_tensor_v2_only(line):
    from torch._tensor import _rebuild_from_type_v2

    relu = torch.nn.functional.relu  # a constant: never called, not through this either
    data = dumps(Reduce(_rebuild_from_type_v2, relu, torch.Tensor, (-torch.ones(2),), {}))
    assert torch.equal(pickle.loads(data), torch.zeros(2))  # the control: relu ran
    refused(data, line, "rebuilds with torch._utils._rebuild_tensor_v2 as torch.Tensor only")


# -- stored functions -----------------------------------------------------------------------------


def test_a_stored_function_is_never_called_during_the_load(line):
    data = dumps(Reduce(torch.nn.functional.relu, torch.ones(2)))
    assert torch.is_tensor(pickle.loads(data))  # the control: relu ran
    refused(data, line, "a constant may be named and stored, never called")
    assert skorch_loadfix.load(io.BytesIO(dumps([torch.nn.functional.relu, np.float64])))


# -- numpy's legacy RandomState and its seed sequence ---------------------------------------------


class Built:
    """Pickles as ``func(*args)``, then BUILD with ``state``."""

    def __init__(self, func, args, state):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return self.func, self.args, self.state


def random_state(**changes):
    from numpy.random._pickle import __randomstate_ctor

    generator = np.random.RandomState(0)
    state = generator.__getstate__()
    state["state"].update(changes)
    return dumps(Built(__randomstate_ctor, (generator._bit_generator,), state))


def test_a_random_state_keeps_its_position_within_its_key(line):
    data = random_state(pos=1 << 20)
    assert pickle.loads(data).get_state()[2] == 1 << 20  # the control: numpy never checks it
    refused(data, line, "takes the state numpy.random.RandomState.get_state(legacy=False)")
    loaded = skorch_loadfix.load(io.BytesIO(random_state()))
    assert loaded.randint(1 << 30) == np.random.RandomState(0).randint(1 << 30)


def seed_sequence(pool, size=4):
    from numpy.random.bit_generator import __pyx_unpickle_SeedSequence

    checksum = np.random.SeedSequence(1).__reduce__()[1][1]
    args = (np.random.SeedSequence, checksum, None)
    return dumps(Built(__pyx_unpickle_SeedSequence, args, (123, 0, pool, size, ())))


def test_a_seed_sequence_is_rebuilt_from_its_entropy(line):
    pool = np.random.SeedSequence(123).pool
    loaded = skorch_loadfix.load(io.BytesIO(seed_sequence(pool)))
    assert np.array_equal(loaded.generate_state(4), np.random.SeedSequence(123).generate_state(4))
    wrong = seed_sequence(pool[:1])
    assert len(pickle.loads(wrong).pool) == 1  # the control: numpy takes the pool as given
    with pytest.raises(UntrustedPickleError, match="its pool is not the one its entropy gives"):
        skorch_loadfix.load(io.BytesIO(wrong))
    refused(seed_sequence(pool, size=1 << 30), line, "a pool size of 4 to 4096")


def test_a_namedtuple_holds_data_made_here_only(line):
    from sklearn.impute._iterative import _ImputerTriplet

    data = dumps(Reduce(_ImputerTriplet, print, 1, 2))
    assert pickle.loads(data).feat_idx is print  # the control
    refused(data, line, "takes 3 fields, each data made in this load")
    triplet = _ImputerTriplet(np.int64(1), np.arange(2), nn.Linear(2, 2))
    assert skorch_loadfix.load(io.BytesIO(dumps(triplet))).feat_idx == 1


# -- what a load hands out may be stored: a table function is sealed, a sparse part copied ---


def test_a_table_function_stored_by_the_file_is_sealed():
    """Stored where fit calls a callable (module=), torch._tensor._rebuild_from_type_v2 would
    create anything and set dunder attributes on it with the file's arguments."""
    rebuild = torch._tensor._rebuild_from_type_v2
    data = dumps({"module": rebuild})
    assert pickle.loads(data)["module"] is rebuild  # the control: the real function
    stored = skorch_loadfix.load(io.BytesIO(data))["module"]
    assert stored is not rebuild
    with pytest.raises(TypeError, match="called only while loading"):
        stored(History, History, (), {"__module__": "x"})


def test_a_sparse_tensor_keeps_no_storage_the_file_shares():
    """Indices checked at load and shared with a buffer that training updates would index
    past the values later (torch.save writes a storage the two share once): the sparse
    tensor gets copies."""
    sparse = torch.sparse_csr_tensor(
        torch.tensor([0, 1, 2]), torch.tensor([0, 1]), torch.ones(2), (2, 2)
    )
    file = io.BytesIO()
    torch.save({"sparse": sparse, "counter": sparse.crow_indices()}, file)
    trusting = torch.load(io.BytesIO(file.getvalue()), weights_only=False)  # the control
    trusting["counter"].add_(5)
    assert trusting["sparse"].crow_indices()[-1] == 7
    loaded = skorch_loadfix.load(io.BytesIO(file.getvalue()))
    loaded["counter"].add_(5)
    assert loaded["sparse"].crow_indices().tolist() == [0, 1, 2]


# -- metadata routing's requests ------------------------------------------------------------------


def requested():
    """What scikit-learn keeps after set_fit_request (<= 1.5: every search's scorer too)."""
    import sklearn
    from sklearn.preprocessing import StandardScaler

    with sklearn.config_context(enable_metadata_routing=True):
        return StandardScaler().set_fit_request(sample_weight=True)


def test_metadata_requests_load_and_need_their_entries(monkeypatch):
    from skorch_loadfix.safe import policy

    data = dumps(requested())
    loaded = skorch_loadfix.load(io.BytesIO(data))
    assert loaded._metadata_request.fit.requests == {"sample_weight": True}
    for name in ("MetadataRequest", "MethodMetadataRequest"):  # the control: each is needed
        table = {k: v for k, v in policy.table().items() if not k.endswith(f".{name}")}
        with monkeypatch.context() as patched:
            patched.setattr(policy, "table", lambda table=table: table)
            with pytest.raises(UntrustedPickleError, match=f"_metadata_requests.{name}"):
                skorch_loadfix.load(io.BytesIO(data))


def test_a_metadata_request_holds_its_methods_requests_only(line):
    """Its ``consumes`` calls ``getattr(self, method)._consumes``: a method's attribute the
    file chose would be called."""
    requests = requested()._metadata_request
    timer = EpochTimer()
    timer._consumes = dict  # an attribute: EpochTimer has none
    requests.fit = timer
    data = dumps(requests)
    called = pickle.loads(data).consumes("fit", ["sample_weight"])  # the control: it is live
    assert called == {"params": ["sample_weight"]}
    refused(data, line, "a method's name: a sklearn.utils._metadata_requests.MethodMetadata")


def test_a_methods_requests_are_plain_values(line):
    requests = requested()._metadata_request.fit
    requests._requests["sample_weight"] = EpochTimer()
    data = dumps(requests)
    assert type(pickle.loads(data).requests["sample_weight"]) is EpochTimer  # the control
    refused(data, line, "{'_requests': {a name: None, a bool or an alias}")
