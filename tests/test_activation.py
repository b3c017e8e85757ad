"""Auto-activation through skorch_loadfix.pth and SKORCH_LOADFIX=1, and the pytest plugin.

These build venvs and start worker pools, so nox runs them once, on the newest torch,
not on every cell of the matrix.
"""

import subprocess
import sys
import textwrap
import venv

import pytest
from conftest import TESTS, run_python
from models import fit
from test_loading import expected_unpatched

from skorch_loadfix.formats import dumps

PROJECT = TESTS.parent
pytest_plugins = ["pytester"]


@pytest.fixture(scope="module")
def legacy_pickle(tmp_path_factory):
    """A pickle the installed skorch can't load unpatched (blob as skorch <= 1.1 wrote it)."""
    path = tmp_path_factory.mktemp("pickles") / "net.pkl"
    path.write_bytes(dumps(fit(), "torch.save"))
    assert expected_unpatched("torch.save") != "ok"
    return path


@pytest.fixture(scope="module", params=["normal", "editable"])
def fresh_python(request, tmp_path_factory):
    """A new venv with this project installed, borrowing torch and skorch from this one."""
    root = tmp_path_factory.mktemp(f"venv-{request.param}")
    venv.create(root, with_pip=True)
    python = str(root / "bin" / "python")
    editable = ["-e"] if request.param == "editable" else []
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", *editable, str(PROJECT)], check=True
    )
    site_packages = next(root.glob("lib/python*/site-packages"))
    borrowed = [p for p in sys.path if p.endswith("site-packages")]
    (site_packages / "zz_borrowed.pth").write_text("\n".join(borrowed) + "\n")
    return python


IMPORTS = "import sys; print(sorted({'torch', 'wrapt', 'skorch_loadfix'} & set(sys.modules)))"
LOAD = """
    import pickle, sys, skorch_loadfix
    pickle.loads(open(sys.argv[1], "rb").read())
    print(skorch_loadfix.status().activated_by)
"""


def test_pth_imports_nothing_heavy_when_skorch_is_never_imported(fresh_python):
    done = run_python(IMPORTS, SKORCH_LOADFIX="1", python=fresh_python)
    assert (done.returncode, done.stdout, done.stderr) == (0, "[]\n", "")


def test_pth_applies_the_patch_when_skorch_is_imported(fresh_python, legacy_pickle):
    assert run_python(LOAD, str(legacy_pickle), python=fresh_python).returncode != 0  # control
    done = run_python(LOAD, str(legacy_pickle), python=fresh_python, SKORCH_LOADFIX="1")
    assert (done.returncode, done.stdout) == (0, "SKORCH_LOADFIX=1\n"), done.stderr


@pytest.mark.parametrize("value", ["0", ""])
def test_off_values_leave_skorch_alone(fresh_python, legacy_pickle, value):
    done = run_python(LOAD, str(legacy_pickle), python=fresh_python, SKORCH_LOADFIX=value)
    assert done.returncode != 0 and "Traceback" in done.stderr


def test_other_values_warn_in_one_line_and_start_normally(fresh_python):
    done = run_python("print('started')", python=fresh_python, SKORCH_LOADFIX="yes")
    assert done.returncode == 0 and done.stdout == "started\n"
    assert done.stderr.count("\n") == 1 and "SKORCH_LOADFIX='yes'" in done.stderr


def test_start_file_is_installed_beside_the_pth(fresh_python):
    """PEP 829: Python >= 3.15 runs its entry point and skips the .pth's import line."""
    code = "import site, pathlib; print(pathlib.Path(site.getsitepackages()[0], {!r}).read_text())"
    code = code.format("skorch_loadfix.start")
    done = run_python(code, python=fresh_python)
    assert (done.returncode, done.stdout) == (0, "_skorch_loadfix_pth:from_environment\n\n")


def test_import_auto_from_sitecustomize(legacy_pickle, tmp_path):
    (tmp_path / "sitecustomize.py").write_text("import skorch_loadfix.auto\n")
    code = f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import sitecustomize\n"
    code += textwrap.dedent(LOAD)
    done = run_python(code, str(legacy_pickle))
    assert (done.returncode, done.stdout) == (0, "import skorch_loadfix.auto\n"), done.stderr


WORKERS = {
    "joblib loky": """
        import joblib, sys, models
        data = open(sys.argv[1], "rb").read()
        joblib.Parallel(n_jobs=2, backend="loky")(
            joblib.delayed(models.load_and_predict)(data) for _ in range(2))
    """,
    "multiprocessing spawn": """
        import multiprocessing, sys, models
        data = open(sys.argv[1], "rb").read()
        if __name__ == "__main__":
            with multiprocessing.get_context("spawn").Pool(2) as pool:
                pool.map(models.load_and_predict, [data, data])
    """,
    "cross_validate": """
        from sklearn.model_selection import cross_validate
        import models
        net = models.fit().initialize()
        result = cross_validate(net, models.X, models.y, cv=2, n_jobs=2, return_estimator=True)
        assert len(result["estimator"]) == 2
    """,
}


@pytest.mark.parametrize("case", WORKERS)
def test_worker_processes_are_patched(case, legacy_pickle):
    unpatched = run_python(WORKERS[case], str(legacy_pickle))
    assert unpatched.returncode != 0, "control: the workers should fail unpatched"
    patched = run_python(WORKERS[case], str(legacy_pickle), SKORCH_LOADFIX="1")
    assert patched.returncode == 0, patched.stderr


PLUGIN_TESTS = """
    import pickle, skorch_loadfix

    def test_fixture(skorch_loadfix):
        assert skorch_loadfix.applied
        pickle.loads(open({path!r}, "rb").read())

    def test_after(request):
        assert skorch_loadfix.is_applied() == request.config.getoption("skorch_loadfix", False)
"""


def test_importing_the_plugin_imports_neither_skorch_nor_torch():
    code = "import sys, skorch_loadfix.pytest_plugin; print({'skorch', 'torch'} & set(sys.modules))"
    done = run_python(code)
    assert (done.returncode, done.stdout) == (0, "set()\n"), done.stderr


def run_pytest(pytester, legacy_pickle, *args):
    pytester.makepyfile(textwrap.dedent(PLUGIN_TESTS.format(path=str(legacy_pickle))))
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)


def test_fixture_applies_for_one_test_only(pytester, legacy_pickle):
    run_pytest(pytester, legacy_pickle).assert_outcomes(passed=2)


def test_flag_applies_for_the_session(pytester, legacy_pickle):
    run_pytest(pytester, legacy_pickle, "--skorch-loadfix").assert_outcomes(passed=2)


def test_ini_applies_for_the_session(pytester, legacy_pickle):
    pytester.makeini("[pytest]\nskorch_loadfix = true\n")
    pytester.makeconftest(
        "import skorch_loadfix\n"
        "def pytest_collection_finish(session):\n"
        "    assert skorch_loadfix.status().activated_by == 'pytest --skorch-loadfix'\n"
    )
    load = f"pickle.loads(open({str(legacy_pickle)!r}, 'rb').read())"
    pytester.makepyfile(f"import pickle\ndef test_load():\n    {load}\n")
    pytester.runpytest_subprocess().assert_outcomes(passed=1)


def test_disabled_with_p_no(pytester, legacy_pickle):
    result = run_pytest(pytester, legacy_pickle, "-p", "no:skorch_loadfix")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*fixture 'skorch_loadfix' not found*"])
