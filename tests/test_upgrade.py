"""``python -m skorch_loadfix upgrade``: old nets re-saved so skorch reads them alone.

Unpatched, every corpus file but the 2025 one fails on this release (see
test_legacy's controls); upgraded, each loads in a fresh interpreter that never
imports skorch_loadfix.
"""

import functools
import json
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_python
from corpus_reference import EXPECTED, corpus_input
from models import TORCH_DEFAULTS_TO_WEIGHTS_ONLY, ModelWithUnlisted, X, fit, y
from test_legacy import FILES, READS_PICKLE_BLOBS, YEARS

import skorch_loadfix
from skorch_loadfix.__main__ import main

pytestmark = [
    pytest.mark.filterwarnings("ignore::torch.serialization.SourceChangeWarning"),
    pytest.mark.filterwarnings("ignore::skorch.exceptions.DeviceWarning"),
]

# skorch <= 1.1 passes no weights_only when it unpickles, so on torch >= 2.6 it cannot
# read even the pickles it writes itself, upgraded or not; torch's own switch is what
# its users set. With it, the file is shown to be that release's own format.
UNPATCHED_ENV = (
    {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    if TORCH_DEFAULTS_TO_WEIGHTS_ONLY and not READS_PICKLE_BLOBS
    else {}
)

READ_UNPATCHED = """
import json, pickle, sys
from pathlib import Path
import numpy as np
X = np.load(sys.argv[1])
results = {}
for out in map(Path, sys.argv[2:]):
    if out.is_dir():
        spec = json.loads((out / "net.json").read_text())
        net = pickle.loads((out / "net.pkl").read_bytes())
        net.initialize()
        net.load_params(**{k: str(out / v) for k, v in spec["files"].items()},
                        **spec["load_params_kwargs"])
    else:
        net = pickle.loads(out.read_bytes())
    results[str(out)] = net.predict_proba(X).tolist()
assert "skorch_loadfix" not in sys.modules
print(json.dumps(results))
"""


# load() allows a user's module classes only when told to.
ALLOW_MODEL = [
    "--allow",
    "skorch_loadfix.demo_model.Model",
    "--allow",
    "skorch_loadfix.demo_model.Block",
]


def read_unpatched(path: Path, monkeypatch):
    """Unpickle an upgraded file here, without the patch, as this release reads it."""
    for name, value in UNPATCHED_ENV.items():
        monkeypatch.setenv(name, value)
    return pickle.loads(path.read_bytes())


def upgrade(*args) -> int:
    return main(["upgrade", *map(str, args)])


def test_every_corpus_file_upgrades_and_loads_unpatched(tmp_path):
    """Both formats, read back by this release in one fresh interpreter without the patch."""
    outputs = {}
    for path in FILES:
        for format in ("pickle", "params"):
            out = tmp_path / f"{path.stem}.{format}"
            assert upgrade(path, out, "--trusted", "--format", format) == 0
            outputs[str(out)] = path.name
    given = tmp_path / "X.npy"
    np.save(given, corpus_input())
    child = run_python(READ_UNPATCHED, str(given), *outputs, **UNPATCHED_ENV)
    assert child.returncode == 0, child.stderr
    expected = json.loads(EXPECTED.read_text())
    predictions = json.loads(child.stdout)
    assert predictions.keys() == outputs.keys()
    for out, predicted in predictions.items():
        want = np.array(expected[outputs[out]])
        np.testing.assert_allclose(predicted, want, rtol=1e-5, atol=1e-6, err_msg=out)


@pytest.mark.parametrize("path", FILES, ids=YEARS.get)
def test_corpus_file_upgrades_through_load(tmp_path, path):
    """The default reads the file with load(), every global checked."""
    out = tmp_path / "net.pkl"
    assert upgrade(path, out) == 0
    assert Path(out).exists()


def test_check_loads_the_result_in_a_fresh_interpreter(tmp_path, capsys):
    out = tmp_path / "net.pkl"
    status = upgrade(FILES[-1], out, "--trusted", "--check")
    if UNPATCHED_ENV:  # this release cannot read its own pickles unpatched: --check says so
        assert status == 1
        err = capsys.readouterr().err
        assert "unpatched skorch cannot load the result" in err
        assert f"{out} was written all the same; --format params writes files it reads" in err
        assert out.exists()
    else:
        assert status == 0
        assert "fresh interpreter predicts the same" in capsys.readouterr().out


def test_file_load_refuses_is_not_upgraded_unless_allowed(tmp_path, capsys, monkeypatch):
    source, out = tmp_path / "net.pkl", tmp_path / "out.pkl"
    source.write_bytes(pickle.dumps(fit(ModelWithUnlisted)))
    allow = [*ALLOW_MODEL, "--allow", "models.ModelWithUnlisted"]
    assert upgrade(source, out, *allow) == 1
    err = capsys.readouterr().err
    assert "load() refuses it" in err and "models.Unlisted" in err
    assert "pass --allow models.Unlisted; if you trust the whole file, --trusted" in err
    assert "skorch_loadfix.load(" not in err  # the CLI's flags, not the Python API
    assert err.count("\n") == 1
    assert not out.exists()
    assert upgrade(source, out, *allow, "--allow", "models.Unlisted") == 0
    assert type(read_unpatched(out, monkeypatch).module_.extra).__name__ == "Unlisted"


def test_existing_target_is_kept_unless_force(tmp_path, capsys):
    source, out = tmp_path / "net.pkl", tmp_path / "out.pkl"
    source.write_bytes(pickle.dumps(fit()))
    out.write_bytes(b"precious")
    assert upgrade(source, out, *ALLOW_MODEL) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert out.read_bytes() == b"precious"
    assert upgrade(source, source, "--force") == 2  # never IN itself, even with --force
    assert upgrade(source, out, "--force", *ALLOW_MODEL) == 0
    assert out.read_bytes() != b"precious"


@pytest.mark.parametrize("format", ["pickle", "params"])
def test_interrupted_write_leaves_target_untouched(tmp_path, monkeypatch, capsys, format):
    """The disk fails after the data is written and before the rename."""
    source, out = tmp_path / "net.pkl", tmp_path / "out"
    source.write_bytes(pickle.dumps(fit()))
    out.write_bytes(b"precious")

    def failing_fsync(descriptor):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    assert upgrade(source, out, "--force", "--format", format, *ALLOW_MODEL) == 1
    assert "No space left on device" in capsys.readouterr().err
    assert out.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.pkl", "out"]  # no temporary


def test_folder_with_a_corrupt_file_upgrades_the_rest(tmp_path, capsys, monkeypatch):
    source, out = tmp_path / "in", tmp_path / "out"
    (source / "deep").mkdir(parents=True)
    net = fit()
    data = pickle.dumps(net)
    (source / "a.pkl").write_bytes(data)
    (source / "deep" / "b.pkl").write_bytes(data)
    (source / "corrupt.pkl").write_bytes(data[: len(data) // 2])
    (source / "notes.txt").write_text("not a net")
    assert main(["upgrade", str(source), "--out", str(out), *ALLOW_MODEL]) == 1
    captured = capsys.readouterr()
    assert "[4/4]" in captured.err
    table = {line.split()[0]: line.split()[1] for line in captured.out.splitlines()[1:-1]}
    assert table == {
        "a.pkl": "done",
        "corrupt.pkl": "failed",
        "deep/b.pkl": "done",
        "notes.txt": "skipped",
    }
    assert "2 done, 1 skipped, 1 failed" in captured.out
    for name in ("a.pkl", "deep/b.pkl"):
        upgraded = read_unpatched(out / name, monkeypatch)
        np.testing.assert_array_equal(upgraded.predict_proba(X), net.predict_proba(X))
    assert not (out / "corrupt.pkl").exists()


def test_usage_errors(tmp_path):
    assert main(["upgrade", str(tmp_path / "missing.pkl"), str(tmp_path / "o")]) == 2
    assert main(["upgrade", str(tmp_path), str(tmp_path / "o")]) == 2  # a folder takes --out
    assert main(["upgrade", str(tmp_path), "--out", str(tmp_path)]) == 2


GONE_MODULE = """
import torch


class GoneModule(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.linear(x)
"""


def test_net_whose_module_class_is_gone_names_it_and_what_to_do(tmp_path, monkeypatch, capsys):
    """pickle itself fails with ModuleNotFoundError; upgrade and load() say what to do."""
    (tmp_path / "gone_module.py").write_text(GONE_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import gone_module

    source = tmp_path / "net.pkl"
    source.write_bytes(pickle.dumps(fit(gone_module.GoneModule)))
    (tmp_path / "gone_module.py").unlink()
    monkeypatch.delitem(sys.modules, "gone_module")
    with pytest.raises(ModuleNotFoundError, match="gone_module"):
        pickle.loads(source.read_bytes())
    assert upgrade(source, tmp_path / "out.pkl", "--trusted") == 1
    err = capsys.readouterr().err
    assert "No module named 'gone_module'" in err
    assert "install or define the module or class the net was built with" in err
    with pytest.raises(skorch_loadfix.UntrustedPickleError, match="install or define it"):
        skorch_loadfix.load(source, allow=["gone_module.GoneModule"])


@pytest.mark.parametrize("compress", [None, "gzip"])
def test_net_holding_a_stand_in_is_not_upgraded(tmp_path, capsys, compress):
    """skorch 0.5's filtered optimizer loads only through skorch-loadfix's stand-ins."""
    from skorch import NeuralNetClassifier

    from skorch_loadfix import stand_ins
    from skorch_loadfix.demo_model import Model

    optimizer = functools.partial(
        stand_ins.make_filtered_optimizer,
        optimizer=torch.optim.SGD,
        filter_fn=stand_ins.filter_requires_grad,
    )
    net = NeuralNetClassifier(Model, optimizer=optimizer, max_epochs=1, verbose=0).fit(X, y)
    source, out = tmp_path / "net.pkl", tmp_path / "out.pkl"
    if compress:  # written back compressed: no module name shows in its bytes
        _joblib(compress)(net, source)
    else:
        source.write_bytes(pickle.dumps(net))
    assert upgrade(source, out, "--trusted") == 1
    assert "holds a skorch-loadfix stand-in" in capsys.readouterr().err
    assert not out.exists()


# -- containers, formats and the CLI's messages -------------------------------------------------


@pytest.fixture(scope="module")
def pipe():
    """A Pipeline around a net whose module is skorch's own (so --check can run it)."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from skorch import NeuralNetClassifier
    from skorch.toy import MLPModule

    net = NeuralNetClassifier(MLPModule, module__input_units=X.shape[1], max_epochs=2, verbose=0)
    return Pipeline([("scale", StandardScaler()), ("net", net)]).fit(X, y)


def _joblib(compress):
    def dump(obj, path):
        import joblib

        joblib.dump(obj, path, compress=(compress, 3) if compress else 0)

    return dump


WRITERS = {
    "pickle": (lambda obj, path: path.write_bytes(pickle.dumps(obj)), "pickle", b"\x80"),
    "joblib": (_joblib(None), "joblib", b"\x80"),
    "joblib gzip": (_joblib("gzip"), "joblib (gzip)", b"\x1f\x8b"),
    "joblib xz": (_joblib("xz"), "joblib (xz)", b"\xfd7zXZ"),
    "torch.save": (lambda obj, path: torch.save(obj, path), "torch.save", b"PK"),
}


@pytest.mark.parametrize("writer", WRITERS)
def test_pipeline_is_upgraded_whole_in_the_format_it_was_written(tmp_path, capsys, pipe, writer):
    dump, said, magic = WRITERS[writer]
    source, out = tmp_path / "in", tmp_path / "out"
    dump(pipe, source)
    status = upgrade(source, out, "--check")
    captured = capsys.readouterr()
    written = "Pipeline holding 1 net (NeuralNetClassifier with MLPModule)"
    assert f"{written} as the installed skorch's {said}" in captured.out + captured.err
    if UNPATCHED_ENV:  # this release cannot read its own nets unpatched: --check says so
        assert status == 1 and "was written all the same" in captured.err
    else:
        assert status == 0, captured.err
        assert "unpatched skorch in a fresh interpreter predicts the same" in captured.out
    data = out.read_bytes()
    assert data.startswith(magic)
    if writer in ("pickle", "joblib"):  # joblib's arrays, or none
        assert (b"NumpyArrayWrapper" in data) == (writer == "joblib")


def test_format_overrides_what_the_file_was(tmp_path, capsys, pipe, monkeypatch):
    """The control of the test above: the default is the file's own format, not pickle."""
    source, out = tmp_path / "in.joblib", tmp_path / "out.pkl"
    _joblib("gzip")(pipe, source)
    assert upgrade(source, out, "--format", "pickle") == 0
    upgraded = read_unpatched(out, monkeypatch)
    np.testing.assert_array_equal(upgraded.predict_proba(X), pipe.predict_proba(X))
    assert upgrade(source, tmp_path / "params", "--format", "params") == 2
    assert "--format params saves one net's parameters, and the file holds Pipeline" in (
        capsys.readouterr().err
    )


def test_search_object_keeps_its_template_and_refit_net(tmp_path, capsys, monkeypatch):
    from sklearn.model_selection import GridSearchCV
    from skorch import NeuralNetClassifier
    from skorch.toy import MLPModule

    net = NeuralNetClassifier(MLPModule, module__input_units=X.shape[1], max_epochs=1, verbose=0)
    search = GridSearchCV(net, {"lr": [0.1, 0.05]}, cv=2).fit(X, y)
    source, out = tmp_path / "search.pkl", tmp_path / "out.pkl"
    source.write_bytes(pickle.dumps(search))
    assert upgrade(source, out, "--trusted") == 0
    assert "GridSearchCV holding 2 nets (NeuralNetClassifier with MLPModule, " in (
        capsys.readouterr().out
    )
    upgraded = read_unpatched(out, monkeypatch)
    assert type(upgraded).__name__ == "GridSearchCV"
    np.testing.assert_array_equal(upgraded.predict_proba(X), search.predict_proba(X))


def test_trusted_torch_save_file_is_read_by_torch_load(tmp_path, capsys, monkeypatch):
    source, out = tmp_path / "net.pt", tmp_path / "out.pt"
    net = fit()
    torch.save(net, source)
    with pytest.raises(pickle.UnpicklingError, match="persistent id"):
        pickle.loads(source.read_bytes())  # the control: what --trusted read it with before
    assert upgrade(source, out, "--trusted") == 0
    assert "as the installed skorch's torch.save" in capsys.readouterr().out
    for name, value in UNPATCHED_ENV.items():  # as read_unpatched does
        monkeypatch.setenv(name, value)
    again = torch.load(out, weights_only=False)
    np.testing.assert_array_equal(again.predict_proba(X), net.predict_proba(X))


def test_outputs_honour_the_umask(tmp_path):
    """tempfile makes private files (the control); upgrade's outputs get the umask's mode."""
    import stat
    import tempfile

    handle, name = tempfile.mkstemp(dir=tmp_path)
    os.close(handle)
    assert stat.S_IMODE(os.stat(name).st_mode) == 0o600
    source = tmp_path / "net.pkl"
    source.write_bytes(pickle.dumps(fit()))
    old = os.umask(0o027)
    try:
        assert upgrade(source, tmp_path / "out.pkl", *ALLOW_MODEL) == 0
        assert upgrade(source, tmp_path / "params", "--format", "params", *ALLOW_MODEL) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "out.pkl").st_mode) == 0o640
    assert stat.S_IMODE(os.stat(tmp_path / "params").st_mode) == 0o750
    assert stat.S_IMODE(os.stat(tmp_path / "params" / "net.json").st_mode) == 0o640


def _unreadable(monkeypatch, denied):
    """Reading ``denied`` fails as chmod 000 would for a user (the tests run as root)."""
    import builtins

    from skorch_loadfix import upgrade as upgrade_module

    def refusing_open(file, *args, **kwargs):
        if Path(file) == denied:
            raise PermissionError(13, "Permission denied", str(file))
        return builtins.open(file, *args, **kwargs)

    monkeypatch.setattr(upgrade_module, "open", refusing_open, raising=False)


def test_unreadable_file_is_one_line_and_the_folder_carries_on(tmp_path, capsys, monkeypatch):
    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    data = pickle.dumps(fit())
    for name in ("a.pkl", "b.pkl", "c.pkl"):
        (source / name).write_bytes(data)
    _unreadable(monkeypatch, source / "b.pkl")
    assert main(["upgrade", str(source), "--out", str(out), *ALLOW_MODEL]) == 1
    captured = capsys.readouterr()
    assert "[3/3] c.pkl" in captured.err and "Traceback" not in captured.err
    rows = {line.split()[0]: line for line in captured.out.splitlines()[1:-1]}
    assert rows["a.pkl"].split()[1] == rows["c.pkl"].split()[1] == "done"  # the control
    assert rows["b.pkl"].split()[1] == "failed"
    assert "could not read it (PermissionError: [Errno 13] Permission denied" in rows["b.pkl"]
    assert upgrade(source / "b.pkl", tmp_path / "b.out", *ALLOW_MODEL) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "could not read it (PermissionError" in err


def test_unwritable_target_is_one_line(tmp_path, capsys, monkeypatch):
    import tempfile

    source = tmp_path / "net.pkl"
    source.write_bytes(pickle.dumps(fit()))

    def refusing(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "out"))

    monkeypatch.setattr(tempfile, "mkstemp", refusing)
    assert upgrade(source, tmp_path / "out" / "net.pkl", *ALLOW_MODEL) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "could not write" in err and "left as it was" in err


def test_blocklisted_allow_is_a_usage_error(tmp_path, capsys):
    source = tmp_path / "net.pkl"
    source.write_bytes(pickle.dumps(fit()))
    assert upgrade(source, tmp_path / "out.pkl", "--allow", "os.system") == 2
    err = capsys.readouterr().err
    assert "--allow os.system: on the hard blocklist" in err and "not a readable" not in err
    assert not (tmp_path / "out.pkl").exists()


def test_failed_check_says_the_output_was_written(tmp_path, capsys):
    """A net whose module lives in skorch_loadfix: the fresh interpreter must import it."""
    source, out = tmp_path / "net.pkl", tmp_path / "out.pkl"
    source.write_bytes(pickle.dumps(fit()))
    assert upgrade(source, out, "--check", *ALLOW_MODEL) == 1
    err = capsys.readouterr().err
    assert "--check: unpatched skorch cannot load the result (" in err
    assert f"{out} was written all the same; --format params writes files it reads" in err
    assert out.exists()
