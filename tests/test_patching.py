"""apply() and revert(): what they install, what they restore, in every order."""

import ast
import dataclasses
import pickle
import sys
import warnings
from pathlib import Path

import pytest
import skorch
import torch
import wrapt
from conftest import run_python
from models import fit, outcome
from skorch.net import NeuralNet
from test_loading import expected_unpatched

import skorch_loadfix
import skorch_loadfix.formats
from skorch_loadfix import patching
from skorch_loadfix.sites import Patch, plan

ORIGINALS = dict(vars(NeuralNet))
PATCHED = ["__setstate__", "load_params", "_validate_params"]


def layers(name: str) -> int:
    """How many wrappers stand between NeuralNet.<name> and skorch's own function."""
    attribute, count = vars(NeuralNet)[name], 0
    while isinstance(attribute, wrapt.FunctionWrapper):
        attribute, count = attribute.__wrapped__, count + 1
    assert attribute is ORIGINALS[name]
    return count


def assert_originals_restored():
    assert vars(NeuralNet).keys() == ORIGINALS.keys()
    assert all(vars(NeuralNet)[name] is original for name, original in ORIGINALS.items())


SUBPROCESS_CASES = {
    "apply before import": """
        import skorch_loadfix, sys
        skorch_loadfix.apply()
        assert "torch" not in sys.modules and "skorch" not in sys.modules
        import pickle, models
        assert skorch_loadfix.status().sites, skorch_loadfix.status()
        pickle.loads(pickle.dumps(models.fit()))
    """,
    "apply after import, twice": """
        import pickle, models, skorch_loadfix, wrapt
        from skorch.net import NeuralNet
        skorch_loadfix.apply(); skorch_loadfix.apply()
        wrapper = vars(NeuralNet)["__setstate__"]
        assert not isinstance(wrapper.__wrapped__, wrapt.FunctionWrapper)
        pickle.loads(pickle.dumps(models.fit()))
    """,
    "32 threads racing apply()": """
        import threading, skorch, skorch_loadfix, wrapt
        from skorch.net import NeuralNet
        original, barrier = vars(NeuralNet)["__setstate__"], threading.Barrier(32)
        def race():
            barrier.wait()
            skorch_loadfix.apply()
        threads = [threading.Thread(target=race) for _ in range(32)]
        [t.start() for t in threads]; [t.join() for t in threads]
        assert vars(NeuralNet)["__setstate__"].__wrapped__ is original
        skorch_loadfix.revert()
        assert vars(NeuralNet)["__setstate__"] is original
    """,
}


@pytest.mark.parametrize("case", SUBPROCESS_CASES)
def test_ordering_in_fresh_interpreter(case):
    done = run_python(SUBPROCESS_CASES[case])
    assert done.returncode == 0, done.stderr


def test_revert_restores_the_very_same_objects():
    skorch_loadfix.apply()
    assert all(layers(name) == 1 for name in PATCHED)
    skorch_loadfix.revert()
    assert_originals_restored()


def test_revert_twice_or_without_apply_is_harmless():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        skorch_loadfix.revert()
        skorch_loadfix.apply()
        skorch_loadfix.revert()
        skorch_loadfix.revert()
    assert_originals_restored()


def test_apply_revert_apply():
    data = pickle.dumps(fit())
    for _ in range(2):
        skorch_loadfix.apply()
        assert all(layers(name) == 1 for name in PATCHED)
        assert outcome(data) == "ok"
        skorch_loadfix.revert()
        assert_originals_restored()


def test_revert_leaves_a_foreign_wrapper_in_place_and_switches_ours_off():
    calls = []

    def foreign(wrapped, instance, args, kwargs):
        calls.append(instance)
        return wrapped(*args, **kwargs)

    data = skorch_loadfix.formats.dumps(fit(), "torch.save")
    skorch_loadfix.apply()
    wrapt.wrap_function_wrapper(NeuralNet, "__setstate__", foreign)
    foreign_wrapper = vars(NeuralNet)["__setstate__"]
    try:
        with pytest.warns(RuntimeWarning, match="wrapped again after apply"):
            skorch_loadfix.revert()
        assert vars(NeuralNet)["__setstate__"] is foreign_wrapper
        assert outcome(data) == expected_unpatched("torch.save")
        assert calls, "the foreign wrapper no longer runs"
        assert "NeuralNet.__setstate__" not in str(skorch_loadfix.status())
    finally:
        NeuralNet.__setstate__ = ORIGINALS["__setstate__"]
    assert_originals_restored()


def test_status_is_an_immutable_record(patched):
    status = skorch_loadfix.status()
    assert status.applied and skorch_loadfix.is_applied()
    assert status.skorch_version == skorch.__version__
    assert torch.__version__.startswith(status.torch_version)  # 2.5.1 from PyPI: 2.5.1+cu124
    assert [site.name for site in status.sites][:2] == [
        "NeuralNet.__setstate__",
        "NeuralNet.load_params",
    ]
    assert all(str(site) in str(status) for site in status.sites)
    with pytest.raises(dataclasses.FrozenInstanceError):
        status.applied = False  # type: ignore[misc]


KNOWN_TORCH_LOADS = {
    "NeuralNet.__setstate__",
    "NeuralNet.load_params._get_state_dict",
    "_TorchLoadUnpickler.find_class._load_from_bytes",
}


def torch_load_calls(path: Path):
    """Dotted names of the functions in ``path`` that call torch.load."""

    def visit(node, scope):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.ClassDef)):
                yield from visit(child, [*scope, child.name])
            elif (
                isinstance(child, ast.Call)
                and isinstance(child.func, ast.Attribute)
                and child.func.attr == "load"
                and getattr(child.func.value, "id", "") == "torch"
            ):
                yield ".".join(scope)
            else:
                yield from visit(child, scope)

    return set(visit(ast.parse(path.read_text()), []))


def test_every_torch_load_in_installed_skorch_is_known():
    """A new call site in a future skorch fails here instead of going unpatched."""
    package = Path(skorch.__file__).parent
    sources = [p for p in package.rglob("*.py") if "tests" not in p.relative_to(package).parts]
    found = set().union(*map(torch_load_calls, sources))
    assert "NeuralNet.load_params._get_state_dict" in found
    assert found <= KNOWN_TORCH_LOADS, found - KNOWN_TORCH_LOADS
    assert ("_TorchLoadUnpickler.find_class._load_from_bytes" in found) == hasattr(
        sys.modules["skorch.utils"], "_TorchLoadUnpickler"
    )


def test_an_inherited_attribute_is_deleted_again():
    class Base:
        def method(self):
            return "original"

    class Child(Base):
        pass

    site = skorch_loadfix.CallSite("Child.method", "answers 'patched'")
    patch = Patch(Child, "method", site, lambda wrapped, instance, args, kwargs: "patched")
    layer = patching._Layer(patch, patching._MISSING)
    layer.install()
    assert Child().method() == "patched" and "method" in vars(Child)
    layer.remove()
    assert "method" not in vars(Child) and Child().method() == "original"


def test_an_untested_skorch_release_gets_one_clear_warning():
    with pytest.warns(RuntimeWarning, match="skorch 9.9.9 is not a release it was tested with"):
        plan(sys.modules["skorch.net"], "9.9.9")
