"""SKORCH_LOADFIX_KWARGS, and the Ray runtime env that carries it with SKORCH_LOADFIX=1.

In-process: ``_apply`` is what the .pth and ``skorch_loadfix.auto`` run as skorch is
imported. test_cluster.py shows the same variables reaching real Ray workers.
"""

import json

import pytest
from models import ModelWithFunction, fit, outcome

import _skorch_loadfix_pth
import skorch_loadfix
from _skorch_loadfix_pth import OPTIONS_VARIABLE, options_from_environment
from skorch_loadfix.formats import dumps
from skorch_loadfix.ray import runtime_env


@pytest.fixture(scope="module")
def holding_len():
    """A net whose torch.save blob names builtins.len: it loads with weights_only=False only."""
    return dumps(fit(ModelWithFunction), "torch.save")


def apply_from(monkeypatch, options: str) -> None:
    monkeypatch.setenv(OPTIONS_VARIABLE, options)
    _skorch_loadfix_pth._apply("SKORCH_LOADFIX=1")


@pytest.mark.parametrize("weights_only, expected", [(True, "fails"), (False, "ok")])
def test_options_reach_apply(monkeypatch, holding_len, weights_only, expected):
    apply_from(monkeypatch, json.dumps({"torch_load_kwargs": {"weights_only": weights_only}}))
    try:
        assert skorch_loadfix.status().activated_by == "SKORCH_LOADFIX=1"
        assert outcome(holding_len) == expected
    finally:
        skorch_loadfix.revert()


def test_strict_reaches_apply(monkeypatch):
    apply_from(monkeypatch, '{"strict": true}')
    try:
        assert skorch_loadfix.status().strict
    finally:
        skorch_loadfix.revert()


BAD = {
    "not JSON": ("{weights_only: true}", "is not valid JSON"),
    "not an object": ('[{"weights_only": true}]', "must be a JSON object"),
    "unknown key": ('{"weights_only": true}', "must be a JSON object"),
    "kwargs not an object": ('{"torch_load_kwargs": true}', "must be a JSON object"),
    "strict not a bool": ('{"strict": "yes"}', "must be a JSON object"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_options_are_named_and_leave_skorch_alone(monkeypatch, capsys, case):
    text, message = BAD[case]
    monkeypatch.setenv(OPTIONS_VARIABLE, text)
    with pytest.raises(ValueError, match=message) as raised:
        options_from_environment()
    assert OPTIONS_VARIABLE in str(raised.value) and '"strict": false' in str(raised.value)
    _skorch_loadfix_pth._apply("SKORCH_LOADFIX=1")  # what a worker does: one line, no patch
    assert not skorch_loadfix.is_applied()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and OPTIONS_VARIABLE in err and "could not apply" in err


def test_kwargs_apply_refuses_reach_stderr_too(monkeypatch, capsys):
    apply_from(monkeypatch, '{"torch_load_kwargs": {"map_location": "cpu"}}')
    assert not skorch_loadfix.is_applied()
    assert "map_location" in capsys.readouterr().err


def test_runtime_env_alone():
    assert runtime_env() == {"env_vars": {"SKORCH_LOADFIX": "1"}}


def test_runtime_env_keeps_what_you_have():
    base = {"pip": ["scipy"], "env_vars": {"OMP_NUM_THREADS": "1", "SKORCH_LOADFIX": "1"}}
    merged = runtime_env(base, torch_load_kwargs={"weights_only": True}, strict=True)
    assert merged["pip"] == ["scipy"]
    assert merged["env_vars"] == {
        "OMP_NUM_THREADS": "1",
        "SKORCH_LOADFIX": "1",
        OPTIONS_VARIABLE: '{"strict": true, "torch_load_kwargs": {"weights_only": true}}',
    }
    assert base["env_vars"] == {"OMP_NUM_THREADS": "1", "SKORCH_LOADFIX": "1"}  # not mutated


def test_runtime_env_options_round_trip(monkeypatch):
    env = runtime_env(torch_load_kwargs={"weights_only": False}, strict=True)["env_vars"]
    monkeypatch.setenv(OPTIONS_VARIABLE, env[OPTIONS_VARIABLE])
    assert options_from_environment() == ({"weights_only": False}, True, True)


@pytest.mark.parametrize(
    "env_vars, name",
    [({"SKORCH_LOADFIX": "0"}, "SKORCH_LOADFIX"), ({OPTIONS_VARIABLE: "{}"}, OPTIONS_VARIABLE)],
)
def test_runtime_env_refuses_a_conflicting_value(env_vars, name):
    with pytest.raises(ValueError, match=f"already sets {name}=.*remove it from env_vars"):
        runtime_env({"env_vars": env_vars}, strict=True)


def test_runtime_env_checks_options_where_you_call_it():
    with pytest.raises(ValueError, match="runtime_env.*map_location"):
        runtime_env(torch_load_kwargs={"map_location": "cpu"})
    with pytest.raises(TypeError, match="plain JSON values.*SKORCH_LOADFIX_KWARGS"):
        runtime_env(torch_load_kwargs={"encoding": object()})
    with pytest.raises(TypeError, match="strict must be True or False"):
        runtime_env(strict=1)


@pytest.mark.parametrize(("switch", "said"), [(None, True), ("0", False)])
def test_options_without_the_switch_are_not_silently_ignored(monkeypatch, capsys, switch, said):
    """Unset, the switch was likely forgotten; "0" says to leave skorch alone."""
    monkeypatch.setattr(_skorch_loadfix_pth, "_read", False)
    monkeypatch.setenv(OPTIONS_VARIABLE, '{"strict": true}')
    if switch is None:
        monkeypatch.delenv(_skorch_loadfix_pth.VARIABLE, raising=False)
    else:
        monkeypatch.setenv(_skorch_loadfix_pth.VARIABLE, switch)
    _skorch_loadfix_pth.from_environment()
    expected = f"ignoring {OPTIONS_VARIABLE}: it only takes effect with SKORCH_LOADFIX=1"
    assert (expected in capsys.readouterr().err) is said
    assert not skorch_loadfix.is_applied()
