"""``python -m skorch_loadfix``: the status in a fresh interpreter as users run it, the rest
in-process (``inspect`` imports nothing from the file). ``demo`` runs on every cell from nox.
"""

import json
import pickle

import pytest
import skorch
from conftest import run_python
from models import ModelWithFunction, fit
from test_loading import corpus

from skorch_loadfix.__main__ import main
from skorch_loadfix.formats import WRITERS, dumps

CLI = "import sys; from skorch_loadfix.__main__ import main; sys.exit(main(sys.argv[1:]))"
BLOB_FORMATS = {"torch.save": "torch.save (zip)", "pickle": "pickle"}


def test_status_lists_what_apply_patches_and_the_activation_state():
    done = run_python(CLI)
    assert done.returncode == 0, done.stderr
    assert "apply() patches:\n  NeuralNet.__setstate__: " in done.stdout
    assert "skorch.dataset.CVSplit -> skorch.dataset.ValidSplit" in done.stdout
    assert "SKORCH_LOADFIX='': auto-activation off" in done.stdout
    assert "skorch_loadfix.pth: " in done.stdout


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["frobnicate"])
    assert exit.value.code == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err


def run(capsys, *args):
    """``python -m skorch_loadfix *args`` in-process: exit status, stdout, stderr."""
    status = main(list(map(str, args)))
    return status, *capsys.readouterr()


def inspect_json(capsys, path):
    status, out, err = run(capsys, "inspect", "--json", path)
    assert status == 0, err
    return json.loads(out)


@pytest.fixture(scope="module")
def own_pickles(tmp_path_factory):
    """This skorch's pickles, in its own format and in both blob formats."""
    folder, net = tmp_path_factory.mktemp("own"), fit()
    files = {"native": pickle.dumps(net), **{w: dumps(net, w) for w in WRITERS}}
    for name, data in files.items():
        (folder / f"{name}.pkl").write_bytes(data)
    return folder


def expected_format(name: str, version: str) -> str:
    if name == "native":
        name = "torch.save" if tuple(map(int, version.split(".")[:2])) <= (1, 1) else "pickle"
    return BLOB_FORMATS[name]


def test_inspect_reports_every_format_from_every_version(capsys, own_pickles):
    files = [(p, p.stem, skorch.__version__) for p in own_pickles.glob("*.pkl")]
    files += [(p, *p.stem.split("-")[2:0:-1]) for p in corpus()]  # skorch-<version>-<name>
    for path, name, version in files:
        report = inspect_json(capsys, path)
        assert report["net_class"] == "skorch.classifier.NeuralNetClassifier", path
        assert report["blob_format"] == expected_format(name, version), path
        assert report["device"] == "cpu" and report["torch_load_kwargs"] is None, path
        assert "torch._utils._rebuild_tensor_v2" in report["globals"]["cuda-attributes blob"]
        assert report["verdict"].startswith("yes"), (path, report["verdict"])
        own_classes = {f"skorch_loadfix.demo_model.{name}" for name in ("Model", "Block")}
        assert set(report["refused_by_load"]) == own_classes, path


@pytest.mark.parametrize("writer", WRITERS)
def test_inspect_names_what_weights_only_refuses(capsys, tmp_path, writer):
    """A pickle blob is read by pickle under apply(), as skorch 1.2-1.4 do: only its tensor
    streams are restricted."""
    path = tmp_path / "net.pkl"
    path.write_bytes(dumps(fit(ModelWithFunction), writer))
    expected = ["builtins.len"] if writer == "torch.save" else []
    assert inspect_json(capsys, path)["refused_under_weights_only"] == expected
    _, out, _ = run(capsys, "inspect", path)
    verdict = "no, it refuses builtins.len" if expected else "yes"
    assert f"loads with weights_only=True: {verdict}\n" in out
    assert "loads with skorch_loadfix.load(): no, it refuses\n" in out
    assert "  builtins.len: not allowed (in the cuda-attributes blob)" in out


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"", "an empty file (0 bytes): nothing was saved in it"),
        (b"hello, world\n", "a text file: it holds no pickled net"),
        (bytes(range(256)), "a file of no format skorch-loadfix knows"),
        ("truncated", "not a readable pickle ("),
    ],
    ids=["empty", "text", "binary", "truncated"],
)
def test_inspect_garbage_is_one_line_and_exit_2(capsys, tmp_path, own_pickles, content, said):
    """What the file is, by its content (see test_containers), or the pickle's own error."""
    if content == "truncated":
        data = (own_pickles / "pickle.pkl").read_bytes()
        content = data[: len(data) // 2]
    path = tmp_path / "garbage.pkl"
    path.write_bytes(content)
    status, out, err = run(capsys, "inspect", path)
    assert (status, out) == (2, "")
    assert err.startswith(f"skorch-loadfix inspect: {path}: {said}")
    assert err.count(said) == 1  # said once, not twice
    assert err.count("\n") == 1
