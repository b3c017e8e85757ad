"""The docs check: links resolve (tools/check_docs.py), and README's Python blocks run.

Each ```python block of README.md runs in a fresh interpreter, in a folder holding the
files it says it needs (``<!-- docs-check: needs FILE ... -->`` right before it), made
here from real nets. Controls show the blocks can fail: without ``apply()`` the first
fails where unpatched skorch does, and the model server turns a refused upload into a
message for its user.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import TESTS
from models import fit
from test_loading import expected_unpatched

from skorch_loadfix.formats import dumps

ROOT = TESTS.parent
sys.path.insert(0, str(ROOT / "tools"))
import check_docs  # noqa: E402

_BLOCK = re.compile(
    r"(?:<!-- docs-check: needs (?P<needs>[^>]*?) -->\n)?```python\n(?P<code>.*?)```", re.DOTALL
)
MYMODELS = """
from torch import nn


class MyModule(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 2)

    def forward(self, x):
        return self.linear(x)
"""
WRITE_UPLOAD = """
import pickle
import numpy as np
from skorch import NeuralNetClassifier
from mymodels import MyModule

X = np.random.RandomState(0).rand(16, 4).astype("float32")
net = NeuralNetClassifier(MyModule, max_epochs=1, verbose=0).fit(X, np.arange(16) % 2)
with open("upload.pkl", "wb") as f:
    pickle.dump(net, f)
"""


def readme_blocks() -> list[tuple[str, list[str]]]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return [(m["code"], (m["needs"] or "").split()) for m in _BLOCK.finditer(text)]


def run(code: str, folder: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SKORCH_LOADFIX"}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=folder, capture_output=True, text=True, env=env
    )


def make(name: str, folder: Path) -> None:
    """The file a README block reads, made from a real net."""
    if name == "net.pkl":  # as skorch <= 1.1 wrote it: what needs the fix on torch >= 2.6
        (folder / name).write_bytes(dumps(fit(), "torch.save"))
    elif name == "mymodels.py":
        (folder / name).write_text(textwrap.dedent(MYMODELS))
    elif name == "upload.pkl":
        make("mymodels.py", folder)
        written = run(WRITE_UPLOAD, folder)
        assert written.returncode == 0, written.stderr
    else:
        raise AssertionError(f"README needs {name}, which this test does not know how to make")


def folder_for(needs: list[str], tmp_path: Path) -> Path:
    for name in needs:
        make(name, tmp_path)
    return tmp_path


def test_docs_check_passes():
    assert check_docs.problems() == []


def test_docs_check_finds_each_kind_of_problem(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A `heading`: here\n\n[up](../README.md#top)\n")
    (tmp_path / ".ci").mkdir()
    (tmp_path / ".ci" / "run").write_text("nox\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text("def test_here():\n    pass\n")
    (tmp_path / "README.md").write_text(
        "# Top\n\n[ok](docs/a.md#a-heading-here) [gone](docs/b.md) [bad](docs/a.md#nowhere)\n"
        "[self](#top) [web](https://example.com/x#y) `[code](not/a/link.md)`\n"
        "<!-- [comment](not/a/link.md) -->\n`test_here` holds it, `test_gone` held it\n"
        "```python\n[fenced](not/a/link.md)\n```\n" + "x" * check_docs.README_LIMIT
    )
    size = len((tmp_path / "README.md").read_bytes())
    assert check_docs.problems(tmp_path) == [
        "README.md: link to docs/b.md: docs/b.md does not exist",
        "README.md: link to docs/a.md#nowhere: no heading #nowhere in a.md",
        "README.md: cites test_gone, which no module in tests/ defines",
        f"README.md: {size} bytes, over the {check_docs.README_LIMIT} a five-minute read allows",
        f"README.md: the quickstart no longer gives {check_docs.TEST_COMMAND!r}",
        f".ci/run: does not run README's test command {check_docs.TEST_COMMAND!r}",
    ]


def test_slugs_are_githubs():
    assert check_docs.slug("Your own code: `apply()`") == "your-own-code-apply"
    assert check_docs.slug("Symptom → fix") == "symptom--fix"
    assert check_docs.anchors("# A\n## A\n```\n# not a heading\n```\n") == {"a", "a-1"}


def test_readme_has_python_blocks():
    assert len(readme_blocks()) >= 2


@pytest.mark.parametrize("index", range(len(readme_blocks())))
def test_readme_python_block_runs(tmp_path, index):
    code, needs = readme_blocks()[index]
    done = run(code, folder_for(needs, tmp_path))
    assert done.returncode == 0, f"README block {index}:\n{code}\n{done.stderr}"


def block_with(text: str) -> tuple[str, list[str]]:
    return next(block for block in readme_blocks() if text in block[0])


def test_control_apply_block_fails_without_apply(tmp_path):
    code, needs = block_with("skorch_loadfix.apply()")
    done = run(code.replace("skorch_loadfix.apply()", "pass"), folder_for(needs, tmp_path))
    assert (done.returncode == 0) is (expected_unpatched("torch.save") == "ok"), done.stderr


def test_control_model_server_turns_a_refused_upload_into_a_message(tmp_path):
    code, needs = block_with("def load_upload")
    folder = folder_for(needs, tmp_path)
    (folder / "upload.pkl").write_bytes(b"cos\nsystem\n(S'true'\ntR.")  # os.system, protocol 0
    done = run(code, folder)
    assert done.returncode != 0
    assert "AssertionError: The file was not loaded: it names objects" in done.stderr
    (folder / "upload.pkl").write_bytes(b"not a pickle")
    assert "AssertionError: This is not a pickled model" in run(code, folder).stderr
