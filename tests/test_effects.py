"""After the load (issue 16, item 5): what a net does when it is used, and what load() changes.

``load()`` and strict replace the file's ``torch_load_kwargs`` with the caller's, so a
``LoadInitState`` the file chose cannot run an unrestricted ``torch.load`` at ``fit``; the
paths its callbacks write and the callables it stores stay the file's, and
``post_load_effects()`` and ``inspect`` report them, read statically. Each with a control:
the unguarded reading runs the payload, and ``fit`` really writes where the report says.
"""

import contextlib
import io
import os
import pickle
import sys
import types

import pytest
import torch
from conftest import run_python
from models import X, y
from payloads import Reduce
from skorch import NeuralNetClassifier
from skorch.callbacks import Checkpoint, LoadInitState, LRScheduler

import skorch_loadfix
from skorch_loadfix.safe.effects import Effect

WEIGHTS_ONLY_OFF = {"weights_only": False}


def victim_net(tmp_path, marker):
    """A net as an attacker ships it: its history written over a file the victim has, its
    initial state read from a path the file chose (holding a payload), with
    ``torch_load_kwargs`` that switch weights_only off for that read."""
    init = tmp_path / "init"
    init.mkdir()
    torch.save(Reduce(os.system, f"touch {marker}"), init / "params.pt")
    # LoadInitState reads the history first, and names the files after its last epoch
    (init / "history.json").write_text('[{"epoch": 1, "batches": [{}], "event_cp": true}]')
    net = NeuralNetClassifier(
        torch.nn.Linear,
        module__in_features=4,
        module__out_features=2,
        max_epochs=1,
        verbose=0,
        train_split=None,
        callbacks=[
            Checkpoint(
                monitor=None, dirname=str(tmp_path / "ckpt"), f_history=str(tmp_path / "rc")
            ),
            LoadInitState(Checkpoint(dirname=str(init), f_optimizer=None, f_criterion=None)),
            LRScheduler(policy=torch.optim.lr_scheduler.StepLR, step_size=1),
        ],
    )
    # set, not passed: skorch <= 1.0 has no such parameter, yet pickles the attribute, which
    # apply() honours there as on later releases
    net.torch_load_kwargs = WEIGHTS_ONLY_OFF
    return pickle.dumps(net.initialize())


def test_post_load_effects_reports_paths_callables_and_kwargs(tmp_path):
    data = victim_net(tmp_path, tmp_path / "marker")
    (net,) = skorch_loadfix.post_load_effects(io.BytesIO(data))
    assert net.net == "skorch.classifier.NeuralNetClassifier"
    assert net.torch_load_kwargs == repr(WEIGHTS_ONLY_OFF) and net.weakens_later_loads
    found = {(e.kind, e.value) for e in net.effects}
    assert ("writes", repr(str(tmp_path / "rc"))) in found
    assert ("reads", repr(str(tmp_path / "init" / "params.pt"))) in found
    assert ("calls", "torch.optim.lr_scheduler.StepLR") in found
    assert ("calls", "builtins.print") in found  # PrintLog's sink, a default callback
    assert ("calls", "torch.nn.modules.linear.Linear") in found
    assert all(isinstance(effect, Effect) for effect in net.effects)
    text = str(net)
    assert "weakens its later load_params" in text and "LoadInitState" in text


@pytest.mark.parametrize("mode", ["load()", "strict"])
def test_load_and_strict_replace_the_files_torch_load_kwargs(tmp_path, mode):
    marker = tmp_path / "marker"
    data = victim_net(tmp_path, marker)
    if mode == "load()":
        net = skorch_loadfix.load(io.BytesIO(data))
        assert net.torch_load_kwargs is None  # the installed skorch's default
        with skorch_loadfix.torch_load_kwargs(weights_only=True):
            chosen = skorch_loadfix.load(io.BytesIO(data)).torch_load_kwargs
    else:
        skorch_loadfix.apply(strict=True)
        try:
            with skorch_loadfix.torch_load_kwargs(weights_only=True):
                net = chosen = pickle.loads(data)
        finally:
            skorch_loadfix.revert()
        chosen = chosen.torch_load_kwargs
    assert chosen == {"weights_only": True}  # the caller's
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        net.fit(X, y)
    assert not marker.exists()


def test_the_files_torch_load_kwargs_run_the_payload_unguarded(tmp_path):
    """The control: apply() without strict keeps the file's kwargs, and fit runs it."""
    marker = tmp_path / "marker"
    data = victim_net(tmp_path, marker)
    skorch_loadfix.apply()
    try:
        with skorch_loadfix.torch_load_kwargs(weights_only=True):
            net = pickle.loads(data)
        assert net.torch_load_kwargs == WEIGHTS_ONLY_OFF
        # fit under apply() too: skorch <= 1.0 alone passes no kwargs to torch.load
        with contextlib.suppress(Exception):  # what the payload returns is no state dict
            net.fit(X, y)
    finally:
        skorch_loadfix.revert()
    assert marker.exists()


def test_reported_paths_are_written_even_after_load(tmp_path):
    """What load() only reports: a callback's path stays the file's, and fit writes there."""
    data = victim_net(tmp_path, tmp_path / "marker")
    (reported,) = skorch_loadfix.post_load_effects(io.BytesIO(data))
    written = tmp_path / "rc"
    assert ("writes", repr(str(written))) in {(e.kind, e.value) for e in reported.effects}
    net = skorch_loadfix.load(io.BytesIO(data))
    (tmp_path / "init" / "history.json").unlink()  # LoadInitState then passes over it
    net.fit(X, y)
    assert written.exists()


def test_inspect_prints_what_the_net_does(tmp_path, capsys):
    from skorch_loadfix.__main__ import main

    path = tmp_path / "net.pkl"
    path.write_bytes(victim_net(tmp_path, tmp_path / "marker"))
    assert main(["inspect", str(path)]) == 0
    report = capsys.readouterr().out
    assert "what this net does when you use it" in report
    assert f"writes {str(tmp_path / 'rc')!r}" in report
    assert "torch_load_kwargs: {'weights_only': False} (weakens" in report


def test_effects_are_read_without_importing_what_the_file_names(tmp_path):
    """A sink of a module nobody imported: the report names it, and only load() imports
    it (the control: the marker module's import creates the marker)."""
    stand_in = types.ModuleType("xmported_marker")  # as long as the real name, renamed below
    stand_in.sink = lambda *args: None
    stand_in.sink.__module__, stand_in.sink.__qualname__ = "xmported_marker", "sink"
    sys.modules["xmported_marker"] = stand_in
    try:
        net = NeuralNetClassifier(torch.nn.Linear, module__in_features=4, module__out_features=2)
        data = pickle.dumps(net.set_params(iterator_train__collate_fn=stand_in.sink))
    finally:
        del sys.modules["xmported_marker"]
    path, marker = tmp_path / "net.pkl", tmp_path / "imported"
    path.write_bytes(data.replace(b"xmported_marker", b"imported_marker"))
    code = """
        import sys, skorch_loadfix
        allow = ["imported_marker.sink"]
        (net,) = skorch_loadfix.post_load_effects(sys.argv[1], allow=allow)
        print([str(effect) for effect in net.effects if "imported_marker" in effect.value])
        print("imported_marker" in sys.modules)
        skorch_loadfix.load(sys.argv[1], allow=allow)
        print("imported_marker" in sys.modules)
    """
    result = run_python(code, str(path), SKORCH_LOADFIX_MARKER=str(marker))
    assert result.returncode == 0, result.stderr
    listed, before, after = result.stdout.splitlines()
    assert "calls imported_marker.sink: iterator_train__collate_fn" in listed
    assert (before, after) == ("False", "True") and marker.exists()


def test_the_report_costs_what_the_file_is_not_what_it_unfolds_to():
    """The file's values are shown bounded: a memo-shared list nested 40 deep is 2**40 items
    unfolded, and an int past 4300 digits has no repr at all."""
    shared: list = [0]
    for _ in range(40):
        shared = [shared, shared]
    for value in (shared, 10**5000):
        net = NeuralNetClassifier(torch.nn.Linear, module__in_features=4, module__out_features=2)
        net.torch_load_kwargs = {"weights_only": value}
        data = pickle.dumps(net.initialize())
        assert len(data) < 20_000
        (found,) = skorch_loadfix.post_load_effects(io.BytesIO(data))
        assert found.weakens_later_loads and len(found.torch_load_kwargs) < 200
    small: list = [0]
    for _ in range(16):
        small = [small, small]
    assert len(repr(small)) > 2**16  # the control: repr unfolds the shared lists
    with pytest.raises(ValueError, match="digits"):
        repr(10**5000)
