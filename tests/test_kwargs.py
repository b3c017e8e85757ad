"""Which kwargs each torch.load gets, and clear errors for kwargs that can't work."""

import asyncio
import inspect
import pickle
import threading
from contextlib import contextmanager
from unittest import mock

import pytest
import torch
from models import HAS_PARAM, SKORCH_DEFAULT_WEIGHTS_ONLY, Model, ModelWithUnlisted, fit
from sklearn.base import clone
from skorch import NeuralNetClassifier

import skorch_loadfix
from skorch_loadfix import UntrustedPickleError
from skorch_loadfix.formats import WRITERS, dumps
from skorch_loadfix.safe.readers import Reader


def weights_only(call) -> bool:
    """Whether a torch.load call is weights-only."""
    assert "weights_only" in call.kwargs, "weights_only must always be passed"
    return bool(call.kwargs["weights_only"])


def weights_only_seen(load, *args):
    """The weights_only of every torch load made while ``load(*args)`` ran: torch.load's, and
    True for each level the reader reads with its restricted unpickler (never torch.load)."""
    ours, original = [], Reader._torch_load

    def restricted(reader, *args):
        ours.append(True)
        return original(reader, *args)

    with (
        mock.patch("torch.load", wraps=torch.load) as spy,
        mock.patch.object(Reader, "_torch_load", restricted),
    ):
        load(*args)
    assert spy.call_count or ours, "nothing was loaded"
    return {weights_only(call) for call in spy.call_args_list} | set(ours)


@pytest.fixture
def params_file(tmp_path):
    path = tmp_path / "params.pt"
    fit().save_params(f_params=path)
    return path


@pytest.mark.parametrize("writer", WRITERS)
def test_precedence_in_setstate(patched, writer):
    own = dumps(fit(torch_load_kwargs={"weights_only": False}), writer)
    none = dumps(fit(), writer)
    assert weights_only_seen(pickle.loads, own) == {False}
    with skorch_loadfix.torch_load_kwargs(weights_only=True):
        assert weights_only_seen(pickle.loads, own) == {True}  # the caller wins
    skorch_loadfix.apply(torch_load_kwargs={"weights_only": False})
    assert weights_only_seen(pickle.loads, none) == {False}  # apply() default, net has none
    skorch_loadfix.apply()
    assert weights_only_seen(pickle.loads, none) == {SKORCH_DEFAULT_WEIGHTS_ONLY}


def test_precedence_in_load_params(patched, params_file):
    net = NeuralNetClassifier(Model, torch_load_kwargs={"weights_only": False}).initialize()
    assert weights_only_seen(net.load_params, params_file) == {False}
    with skorch_loadfix.torch_load_kwargs(weights_only=True):
        assert weights_only_seen(net.load_params, params_file) == {True}
    skorch_loadfix.apply(torch_load_kwargs={"weights_only": True})
    assert weights_only_seen(NeuralNetClassifier(Model).initialize().load_params, params_file) == {
        True
    }


def test_load_params_weights_only_refuses_and_allows_for_real(patched, tmp_path):
    path = tmp_path / "params.pt"
    net = fit()
    torch.save({**net.module_.state_dict(), "_extra_state": Model}, path)
    strict = NeuralNetClassifier(Model, torch_load_kwargs={"weights_only": True}).initialize()
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        strict.load_params(f_params=path)
    net.save_params(f_params=path)
    strict.load_params(f_params=path)
    torch.testing.assert_close(strict.module_.head.weight, net.module_.head.weight)


@contextmanager
def recording(label):
    """Spy on torch.load, noting ``label()`` (who called) and the weights_only of each call."""
    seen, load = set(), torch.load

    def spy(*args, **kwargs):
        seen.add((label(), weights_only(mock.call(*args, **kwargs))))
        return load(*args, **kwargs)

    with mock.patch("torch.load", spy):
        yield seen


def test_context_manager_is_per_thread(patched):
    data, barrier = dumps(fit(), "pickle"), threading.Barrier(2)

    def load(weights_only):
        with skorch_loadfix.torch_load_kwargs(weights_only=weights_only):
            barrier.wait()  # both threads are inside their own block now
            pickle.loads(data)

    with recording(lambda: threading.current_thread().name) as seen:
        threads = [threading.Thread(target=load, args=(w,), name=str(w)) for w in (True, False)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert seen == {("True", True), ("False", False)}


def test_context_manager_is_per_asyncio_task(patched):
    data = dumps(fit(), "pickle")

    async def load(weights_only):
        with skorch_loadfix.torch_load_kwargs(weights_only=weights_only):
            await asyncio.sleep(0.01)  # the other task enters its own block meanwhile
            pickle.loads(data)

    async def both():
        await asyncio.gather(load(True), load(False))

    with recording(lambda: asyncio.current_task().get_name()) as seen:
        asyncio.run(both())
    assert {w for _, w in seen} == {True, False} and len(seen) == 2


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"map_location": "cpu"}, ValueError, "set device="),
        ({"mmap": True}, ValueError, "mmap=True cannot apply to a pickled net"),
        (["weights_only"], TypeError, "must be a mapping"),
    ],
)
def test_bad_kwargs_name_net_and_call_site(patched, kwargs, error, match):
    net = fit()
    net.torch_load_kwargs = kwargs
    with pytest.raises(error, match=f"NeuralNetClassifier.__setstate__: .*{match}"):
        pickle.loads(pickle.dumps(net))
    if "mmap" not in kwargs:  # mmap=True is fine for load_params from a file
        with pytest.raises(
            error, match=rf"NeuralNetClassifier\(torch_load_kwargs=...\): .*{match}"
        ):
            NeuralNetClassifier(Model, torch_load_kwargs=kwargs).initialize()


def test_bad_kwargs_to_apply_and_context_manager():
    with pytest.raises(ValueError, match=r"skorch_loadfix.apply\(\): .*set device="):
        skorch_loadfix.apply(torch_load_kwargs={"map_location": "cpu"})
    assert not skorch_loadfix.is_applied()
    match = r"skorch_loadfix.torch_load_kwargs\(\): .*set device="
    with pytest.raises(ValueError, match=match), skorch_loadfix.torch_load_kwargs(map_location=1):
        pass


def test_torch_load_kwargs_is_a_real_parameter(patched):
    """On skorch <= 1.0 the patch adds it; on later versions it is skorch's own."""
    kwargs = {"weights_only": True}
    net = NeuralNetClassifier(Model, torch_load_kwargs=kwargs)
    assert net.get_params()["torch_load_kwargs"] is kwargs
    assert NeuralNetClassifier(Model).get_params()["torch_load_kwargs"] is None
    assert clone(net).torch_load_kwargs == kwargs
    assert net.set_params(torch_load_kwargs={"weights_only": False}).torch_load_kwargs == {
        "weights_only": False
    }
    net.initialize()
    assert pickle.loads(pickle.dumps(net)).torch_load_kwargs == {"weights_only": False}


def load_params_calls(net, path):
    """The kwargs of each torch.load in ``net.load_params``, and how the load ended."""
    with mock.patch("torch.load", wraps=torch.load) as spy:
        try:
            net.load_params(f_params=path)
            ended = "loaded"
        except Exception as error:  # torch's own error, whichever it is
            ended = f"{type(error).__name__}: {error}"
    calls = [{k: v for k, v in c.kwargs.items() if k != "map_location"} for c in spy.call_args_list]
    return calls, ended


SKORCH_ACCEPTS = {"weights_only": 123, "foo": "bar"}  # skorch 1.4.0's own test passes this


def test_load_params_forwards_what_skorch_accepts_verbatim(params_file):
    """Keys this package doesn't know and a weights_only that is no bool reach torch as given."""
    skorch_loadfix.apply()  # before the net: skorch <= 1.0 takes the parameter only then
    try:
        net = NeuralNetClassifier(Model, torch_load_kwargs=dict(SKORCH_ACCEPTS)).initialize()
        patched = load_params_calls(net, params_file)
    finally:
        skorch_loadfix.revert()
    assert patched[0] == [SKORCH_ACCEPTS]
    assert "unexpected keyword argument 'foo'" in patched[1]  # torch's own verdict on 'foo'
    if HAS_PARAM:  # the control: unpatched skorch does exactly the same
        assert load_params_calls(net, params_file) == patched


@pytest.mark.parametrize(("weights_only", "restricts"), [(123, True), ("yes", True), (0, False)])
def test_restrictions_follow_the_truth_of_weights_only(patched, tmp_path, weights_only, restricts):
    """As torch decides: a truthy weights_only restricts like True, a falsy one not at all."""
    path = tmp_path / "params.pt"
    torch.save({**fit().module_.state_dict(), "_extra_state": Model}, path)
    net = NeuralNetClassifier(Model, torch_load_kwargs={"weights_only": weights_only}).initialize()
    calls, ended = load_params_calls(net, path)
    assert calls == [{"weights_only": weights_only}]
    assert ("Weights only load failed" in ended) is restricts
    unlisted = fit(ModelWithUnlisted, torch_load_kwargs={"weights_only": weights_only})
    data = dumps(unlisted, "torch.save")  # a blob that weights_only restricts whole
    if restricts:
        with pytest.raises(UntrustedPickleError, match="Unlisted"):
            pickle.loads(data)
    else:
        pickle.loads(data)


def test_load_params_with_mmap_as_torch_decides(params_file):
    """mmap=True maps a params file on torch >= 2.1; older torch refuses it as unpatched skorch."""
    skorch_loadfix.apply()
    try:
        net = NeuralNetClassifier(Model, torch_load_kwargs={"mmap": True}).initialize()
        patched = load_params_calls(net, params_file)
    finally:
        skorch_loadfix.revert()
    # skorch >= 1.1 passes the net's own kwargs itself, as they are: so does the patch.
    filled = {} if HAS_PARAM else {"weights_only": SKORCH_DEFAULT_WEIGHTS_ONLY}
    assert patched[0] == [{"mmap": True, **filled}]
    if "mmap" in inspect.signature(torch.load).parameters:
        assert patched[1] == "loaded"
    else:
        assert "mmap" in patched[1]
    if HAS_PARAM:  # the control: what unpatched skorch does with the same kwargs
        assert load_params_calls(net, params_file) == patched
