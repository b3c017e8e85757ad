"""``python -m skorch_loadfix``, run as users run it. (``demo`` runs on every cell from nox.)"""

import json
import pickle

import pytest
import skorch
from conftest import run_python
from models import ModelWithFunction, fit
from test_loading import corpus

from skorch_loadfix.formats import WRITERS, dumps

CLI = "import sys; from skorch_loadfix.__main__ import main; sys.exit(main(sys.argv[1:]))"
BLOB_FORMATS = {"torch.save": "torch.save (zip)", "pickle": "pickle"}


def test_status_lists_what_apply_patches_and_the_activation_state():
    done = run_python(CLI)
    assert done.returncode == 0, done.stderr
    assert "apply() patches:\n  NeuralNet.__setstate__: " in done.stdout
    assert "SKORCH_LOADFIX='': auto-activation off" in done.stdout
    assert "skorch_loadfix.pth: " in done.stdout


def test_unknown_command_is_a_usage_error():
    done = run_python(CLI, "frobnicate")
    assert done.returncode == 2
    assert "invalid choice: 'frobnicate'" in done.stderr


def inspect_json(path):
    done = run_python(CLI, "inspect", "--json", str(path))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


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


def test_inspect_reports_every_format_from_every_version(own_pickles):
    files = [(p, p.stem, skorch.__version__) for p in own_pickles.glob("*.pkl")]
    files += [(p, *p.stem.split("-")[2:0:-1]) for p in corpus()]  # skorch-<version>-<name>
    for path, name, version in files:
        report = inspect_json(path)
        assert report["net_class"] == "skorch.classifier.NeuralNetClassifier", path
        assert report["blob_format"] == expected_format(name, version), path
        assert report["device"] == "cpu" and report["torch_load_kwargs"] is None, path
        assert "torch._utils._rebuild_tensor_v2" in report["globals"]["cuda-attributes blob"]
        assert report["verdict"].startswith("yes"), (path, report["verdict"])


@pytest.mark.parametrize("writer", WRITERS)
def test_inspect_names_what_weights_only_refuses(tmp_path, writer):
    path = tmp_path / "net.pkl"
    path.write_bytes(dumps(fit(ModelWithFunction), writer))
    report = inspect_json(path)
    assert report["refused_under_weights_only"] == ["builtins.len"]
    done = run_python(CLI, "inspect", str(path))
    assert "loads with weights_only=True: no, it refuses builtins.len" in done.stdout


@pytest.mark.parametrize(
    "content", [b"", b"hello, world\n", bytes(range(256)), "truncated"], ids=repr
)
def test_inspect_garbage_is_one_line_and_exit_2(tmp_path, own_pickles, content):
    if content == "truncated":
        data = (own_pickles / "pickle.pkl").read_bytes()
        content = data[: len(data) // 2]
    path = tmp_path / "garbage.pkl"
    path.write_bytes(content)
    done = run_python(CLI, "inspect", str(path))
    assert done.returncode == 2
    assert done.stderr.startswith(f"skorch-loadfix inspect: {path} is not a readable pickle")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
