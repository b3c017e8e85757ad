"""The policy table: what the committed generator finds here is in it, and every entry present
in this install resolves, without a module __getattr__, to an object of exactly that name."""

import sys
import types

import pytest
import torch
from conftest import run_python

from skorch_loadfix.safe import published
from skorch_loadfix.safe.policy import (
    STAND_INS,
    Policy,
    Refused,
    blocked,
    policy,
    table,
    translated,
)


def test_table_covers_what_the_generator_finds_here():
    names = {line.split()[0]: line for line in published.lines()}
    missing = sorted(set(names) - set(table()))
    assert missing == [], "run python -m skorch_loadfix.safe.published and merge published.txt"
    # Same kind and container as the generator says.
    for name, line in names.items():
        flags = line.split()[1:]
        entry = table()[name]
        assert entry.kind == ("constant" if flags == ["constant"] else entry.kind)
        if flags and flags != ["constant"]:
            assert entry.container == flags[0], name


def test_every_entry_present_resolves_to_exactly_its_name():
    absent, wrong = [], {}
    for name, entry in table().items():
        module, _, qualname = name.rpartition(".")
        try:
            found, obj = Policy().entry(module, qualname, importing=True)
        except Refused as refused:
            if refused.why.startswith("not found in this install"):
                absent.append(name)  # another release's name; the test there checks it
            else:
                wrong[name] = refused.why
            continue
        assert found.kind == entry.kind  # numpy.core.X is looked up as numpy._core.X
        if entry.substitute in STAND_INS:  # a blocked name: the unpickler's substitute, only
            assert obj is None and blocked(name), name
            continue
        if callable(obj):
            assert f"{obj.__module__}.{obj.__qualname__}" == translated(module, qualname)
        else:
            assert isinstance(obj, torch.dtype), name  # the only constants that are no callables
    assert wrong == {}
    assert len(absent) < len(table()) // 4, absent  # most of the table is this install's


def test_resolution_never_runs_a_module_getattr(monkeypatch):
    asked = []
    module = types.ModuleType("lazy_module")
    module.__getattr__ = lambda name: asked.append(name) or print  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "lazy_module", module)
    for importing in (True, False):
        with pytest.raises(Refused, match="not found in this install"):
            policy(["lazy_module.thing"]).entry("lazy_module", "thing", importing=importing)
    assert asked == []


def test_a_name_that_resolves_elsewhere_is_refused(monkeypatch):
    """An allowed spelling whose object is really another one (a re-export) is refused."""
    module = types.ModuleType("reexports")
    module.partial = print  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "reexports", module)
    with pytest.raises(Refused, match="resolves to builtins.print"):
        policy(["reexports.partial"]).entry("reexports", "partial", importing=False)


def test_old_torch_without_safe_globals(monkeypatch):
    """torch < 2.4 has no get_safe_globals: the policy treats it as empty."""
    monkeypatch.delattr(torch.serialization, "get_safe_globals", raising=False)
    with pytest.raises(Refused, match="not allowed"):
        Policy().entry("collections", "ChainMap", importing=True)
    entry, obj = Policy().entry("collections", "OrderedDict", importing=True)
    assert entry.kind == "class"


AUDIT_IMPORTS = """
import io, pickle, sys
import skorch_loadfix.safe.verifier, skorch, torch  # what load() imports before any file
from skorch_loadfix import untrusted_globals
from skorch_loadfix.safe.policy import table

names = sys.argv[1:]
spelt = (f"c{n.rpartition('.')[0]}\\n{n.rpartition('.')[2]}\\n" for n in names)
data = b"(" + "".join(spelt).encode()
before = set(sys.modules)
refused = untrusted_globals(io.BytesIO(data + b"t."))
listed = {name.rpartition(".")[0] for name in table()}
listed |= {module.rsplit(".", depth)[0] for module in listed for depth in range(1, 4)}
print(sorted(name for name in refused))
print(sorted(set(sys.modules) - before - listed))
print(sorted(n for n in names if n.rpartition(".")[0] in before))
"""


def test_the_audit_imports_no_module_the_table_does_not_list():
    """The old audit imported 2262 modules for one pickle with 7 globals, pytest among them.

    The control: each of these names a module that exists here and is not imported yet.
    """
    names = [
        "sklearn.datasets._openml.fetch_openml",
        "sklearn.metrics.tests.test_score_objects.test_all_scorers_repr",
        "torch._dynamo.optimize",
        "pytest.main",
        "wave.open",
        "colorsys.rgb_to_hsv",
        "sklearn.isotonic.IsotonicRegression",  # a table class: its module may be imported
    ]
    result = run_python(AUDIT_IMPORTS, *names)
    assert result.returncode == 0, result.stderr
    refused, imported, already = (eval(line) for line in result.stdout.splitlines()[-3:])
    assert refused == sorted(names[:-1])
    assert imported == []
    assert already == []  # the control: importing any of them would have shown
