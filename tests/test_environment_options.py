"""SKORCH_LOADFIX_KWARGS, the Ray runtime env that carries it with SKORCH_LOADFIX=1, and
what reads them at start-up: the .pth line, its PEP 829 ``.start`` entry point, and the
pytest plugin named with ``-p`` when plugin autoloading is off.

``_apply`` is what the .pth and ``skorch_loadfix.auto`` run as skorch is imported; the
start-up files are run by a real interpreter start in a bare venv that holds them.
test_cluster.py shows the same variables reaching real Ray workers.
"""

import json
import pkgutil
import shutil
import subprocess
import sys
import venv

import pytest
from conftest import TESTS, run_python
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


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory):
    """A venv without pip whose site-packages gets only the start-up files under test; torch,
    skorch and this package come from this interpreter's paths, whose .pth files never run."""
    root = tmp_path_factory.mktemp("bare")
    venv.create(root)
    site_packages = next(root.glob("lib/python*/site-packages"))
    shutil.copy(PROJECT / "_skorch_loadfix_pth.py", site_packages)
    borrowed = [p for p in sys.path if p.endswith("site-packages")]
    (site_packages / "zz_borrowed.pth").write_text("\n".join(borrowed) + "\n")
    return str(root / "bin" / "python"), site_packages


PROJECT = TESTS.parent
PTH_LINE = (PROJECT / "skorch_loadfix.pth").read_text()
START_LINE = (PROJECT / "skorch_loadfix.start").read_text().strip()
# The .pth line of 0.1.0: it returned before reading SKORCH_LOADFIX_KWARGS (the control).
OLD_PTH_LINE = (
    'import os; "SKORCH_LOADFIX" in os.environ and '
    '__import__("_skorch_loadfix_pth").from_environment()\n'
)
# What start-up left armed: the finder that applies the patch as skorch is imported.
ARMED = (
    "import sys; print([type(f).__name__ for f in sys.meta_path if 'Skorch' in type(f).__name__])"
)
IGNORED = "skorch-loadfix: ignoring SKORCH_LOADFIX_KWARGS: it only takes effect with"


def start(bare_python, pth: str | None, code: str = ARMED, **env: str):
    """A real interpreter start with ``pth`` as skorch_loadfix.pth (None: no .pth)."""
    python, site_packages = bare_python
    path = site_packages / "skorch_loadfix.pth"
    path.unlink(missing_ok=True)
    if pth is not None:
        path.write_text(pth)
    return run_python(code, python=python, **env)


OPTIONS = {"SKORCH_LOADFIX_KWARGS": '{"strict": true}'}


@pytest.mark.parametrize(
    "switch, said", [(None, True), ("0", False), ("1", False)], ids=["unset", "0", "1"]
)
def test_options_without_the_switch_are_said_at_interpreter_start(bare_python, switch, said):
    """Unset, the switch was likely forgotten: one line. "0" says to leave skorch alone."""
    env = {} if switch is None else {"SKORCH_LOADFIX": switch}
    started = start(bare_python, PTH_LINE, **OPTIONS, **env)
    assert started.returncode == 0, started.stderr
    if said:
        assert started.stderr.count("\n") == 1 and started.stderr.startswith(IGNORED)
    else:
        assert started.stderr == ""


def test_interpreter_start_is_silent_without_the_variables_and_the_old_line_was_too(bare_python):
    assert start(bare_python, PTH_LINE).stderr == ""
    assert start(bare_python, OLD_PTH_LINE, **OPTIONS).stderr == ""  # the control: 0.1.0's line


def test_start_entry_point_resolves_to_what_the_pth_line_calls():
    import _skorch_loadfix_pth

    assert pkgutil.resolve_name(START_LINE) is _skorch_loadfix_pth.from_environment
    assert PTH_LINE.count("\n") == 1 and PTH_LINE.startswith("import ")
    assert '__import__("_skorch_loadfix_pth").from_environment()' in PTH_LINE


CALL_START = f"import pkgutil; pkgutil.resolve_name({START_LINE!r})(); "
ENVIRONMENTS = {
    "nothing set": {},
    "switch on": {"SKORCH_LOADFIX": "1"},
    "options alone": {"SKORCH_LOADFIX_KWARGS": "{}"},
    "switch off": {"SKORCH_LOADFIX": "0", "SKORCH_LOADFIX_KWARGS": "{}"},
    "bad switch": {"SKORCH_LOADFIX": "yes"},
}


@pytest.mark.parametrize("case", ENVIRONMENTS)
def test_start_entry_point_does_what_the_pth_line_does(bare_python, case):
    """Python >= 3.15 calls the .start's entry point instead of the .pth's import line."""
    by_pth = start(bare_python, PTH_LINE, **ENVIRONMENTS[case])
    by_start = start(bare_python, None, CALL_START + ARMED, **ENVIRONMENTS[case])
    assert by_pth.returncode == by_start.returncode == 0, by_start.stderr
    assert (by_start.stdout, by_start.stderr) == (by_pth.stdout, by_pth.stderr)
    armed = by_pth.stdout == "['_SkorchWatcher']\n"
    assert armed is (case == "switch on"), by_pth.stdout


def test_start_entry_point_applies_the_patch_on_import_skorch(bare_python):
    code = CALL_START + (
        "import pickle, sys, skorch_loadfix; pickle.loads(open(sys.argv[1], 'rb').read()); "
        "print(skorch_loadfix.status().activated_by)"
    )
    python, site_packages = bare_python
    path = site_packages.parent / "net.pkl"
    path.write_bytes(dumps(fit(), "torch.save"))
    started = start(
        bare_python, None, code.replace("sys.argv[1]", repr(str(path))), SKORCH_LOADFIX="1"
    )
    assert (started.returncode, started.stdout) == (0, "SKORCH_LOADFIX=1\n"), started.stderr


PLUGIN_TEST = "def test_fixture(skorch_loadfix):\n    assert skorch_loadfix.applied\n"


@pytest.mark.parametrize("args, passed", [((), False), (("-p", "skorch_loadfix"), True)])
def test_plugin_named_with_p_when_autoload_is_off(tmp_path, args, passed):
    (tmp_path / "test_it.py").write_text(PLUGIN_TEST)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args, "test_it.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**run_env(), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
    )
    assert (done.returncode == 0) is passed, done.stdout
    assert ("fixture 'skorch_loadfix' not found" in done.stdout) is not passed


def run_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
