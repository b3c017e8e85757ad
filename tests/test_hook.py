"""The audit hook (skorch_loadfix.safe.hook): what it refuses inside a guarded load, that the
same calls work outside one, that other threads and tasks are untouched, and that legit loads
of real nets raise nothing it refuses. Every harmful call here would only create a marker."""

import asyncio
import contextlib
import io
import json
import os
import pickle
import sys
import threading
from pathlib import Path

import flawed
import pytest
import torch
from audit_recorder import recording
from conftest import run_python
from gadget_chain import cached_call_chain
from models import fit
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from skorch.callbacks import EpochScoring

import skorch_loadfix
from skorch_loadfix import UntrustedPickleError
from skorch_loadfix.demo_model import Block, Model
from skorch_loadfix.formats import BLOB, WRITERS, dumps, dumps_state
from skorch_loadfix.safe import hook, readers, verifier
from skorch_loadfix.safe.hook import guarding, resolving

CORPUS = Path(__file__).parent / "data" / "corpus"  # the real 2019-2025 files
IMPORTED = "hook_marker_module"  # a module whose import creates the marker

# Each family: code run as the body of ``run(m, d)``, m a marker path, d a scratch folder
# holding ``victim`` and ``hook_marker_module.py``; and whether it leaves the marker.
FAMILIES = {
    "os.system": ("os.system(f'touch {m}')", True),
    "subprocess.Popen": ("subprocess.run(['touch', m], check=True)", True),
    "os.posix_spawn": ("os.waitpid(os.posix_spawn('/usr/bin/touch', ['touch', m], {}), 0)", True),
    "os.spawnv": ("os.spawnv(os.P_WAIT, '/usr/bin/touch', ['touch', m])", True),
    "os.fork": (
        "pid = os.fork()\nif pid == 0: os.close(os.open(m, os.O_CREAT)); os._exit(0)\n"
        "os.waitpid(pid, 0)",
        True,
    ),
    "open for writing": ("open(m, 'w').close()", True),
    "os.open": ("os.close(os.open(m, os.O_CREAT | os.O_WRONLY))", True),
    "exec": ("exec(f'open({m!r}, \"w\").close()')", True),
    "eval/compile": ("eval(compile(f'open({m!r}, \"w\").close()', 'x', 'eval'))", True),
    "import": (f"importlib.import_module({IMPORTED!r})", True),
    "os.remove": ("os.remove(os.path.join(d, 'victim')); open(m, 'w').close()", True),
    "os.rename": ("os.rename(os.path.join(d, 'victim'), m)", True),
    "os.mkdir": ("os.mkdir(m)", True),
    "os.chmod": ("os.chmod(os.path.join(d, 'victim'), 0o600); open(m, 'w').close()", True),
    "shutil.copyfile": ("shutil.copyfile(os.path.join(d, 'victim'), m)", True),
    "os.putenv": ("os.environ['SKORCH_LOADFIX_HOOK_TEST'] = m", False),
    "open for reading": ("open('/etc/passwd').read()", False),
    "os.listdir": ("os.listdir(d)", False),
    "socket": ("socket.socket().close()", False),
    "ctypes": ("ctypes.CDLL(None)", False),
    "marshal.loads": ("marshal.loads(marshal.dumps(1))", False),
    "nested pickle": ("pickle.loads(pickle.dumps(collections.OrderedDict))", False),
    "function.__new__": ("types.FunctionType((lambda: 0).__code__, {})", False),
    "code.__new__": ("(lambda: 0).__code__.replace()", False),
    "object.__setattr__ of __defaults__": ("def f(x=1): pass\nf.__defaults__ = (2,)", False),
    "sys.addaudithook": (
        "seen = []\nsys.addaudithook(lambda e, a: seen.append(e))\nsys.audit('hook test')\n"
        "if seen: open(m, 'w').close()",
        True,
    ),
    "sys.settrace": ("sys.settrace(None)", False),
    "gc.get_objects": ("gc.get_objects()", False),
    "gc.get_referrers": ("gc.get_referrers(os)", False),
    "urllib.Request": (  # port 9 (discard): closed here, so the control is refused by the OS
        "try: urllib.request.urlopen('http://127.0.0.1:9/', timeout=1)\n"
        "except urllib.error.URLError: pass",
        False,
    ),
}

CHILD = """
import collections, contextlib, ctypes, gc, importlib, json, marshal, os, pickle, shutil
import socket, subprocess, sys, types, urllib.error, urllib.request
from skorch_loadfix import UntrustedPickleError
from skorch_loadfix.safe.hook import guarding
families, guarded, d = json.loads(sys.argv[1]), sys.argv[2] == "1", sys.argv[3]
sys.path.insert(0, d)
found = {}
for name, code in families.items():
    m = os.path.join(d, "marker-" + str(len(found)))
    with open(os.path.join(d, "victim"), "w") as victim:
        victim.write("keep")
    with open(os.path.join(d, "hook_marker_module.py"), "w") as module:
        module.write(f"open({m!r}, 'w').close()")
    sys.modules.pop("hook_marker_module", None)
    namespace = dict(globals())
    exec("def run(m, d):\\n" + "".join("    " + line + "\\n" for line in code.splitlines()),
         namespace)
    try:
        with guarding("the test") if guarded else contextlib.nullcontext():
            namespace["run"](m, d)
        outcome = "ran"
    except UntrustedPickleError as error:
        outcome = "refused: " + str(error)
    except Exception as error:
        outcome = f"{type(error).__name__}: {error}"
    kept = open(os.path.join(d, "victim")).read() == "keep" if os.path.exists(
        os.path.join(d, "victim")) else False
    found[name] = {"outcome": outcome, "marker": os.path.exists(m), "victim kept": kept}
print(json.dumps(found))
"""


def families_in_child(folder: Path, guarded: bool) -> dict[str, dict]:
    """Each family run in one fresh interpreter, guarded or not (os.fork needs a process of
    its own, and a fresh one shows what the first guarded block sees)."""
    codes = {name: code for name, (code, _) in FAMILIES.items()}
    result = run_python(CHILD, json.dumps(codes), "1" if guarded else "0", str(folder))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def guarded_families(tmp_path_factory):
    return families_in_child(tmp_path_factory.mktemp("guarded"), guarded=True)


@pytest.fixture(scope="module")
def unguarded_families(tmp_path_factory):
    return families_in_child(tmp_path_factory.mktemp("unguarded"), guarded=False)


# CPython swallows an Exception a hook raises on sys.addaudithook, and adds no hook.
SILENTLY_REFUSED = {"sys.addaudithook"}


@pytest.mark.parametrize("family", FAMILIES)
def test_guard_refuses_each_family_and_its_effect_does_not_happen(guarded_families, family):
    found = guarded_families[family]
    if family in SILENTLY_REFUSED:
        assert found["outcome"] == "ran", found
    else:
        assert found["outcome"].startswith("refused: the test: "), found
        assert "audit hook refused it" in found["outcome"]
    assert not found["marker"], found
    assert found["victim kept"], found


@pytest.mark.parametrize("family", FAMILIES)
def test_without_guard_each_family_works(unguarded_families, family):
    """The control: each call is live, so the refusals above are the hook's doing."""
    found = unguarded_families[family]
    assert found["outcome"] == "ran", found
    assert found["marker"] == FAMILIES[family][1], found


def test_exec_of_a_program_is_refused_and_runs_without_the_guard(tmp_path):
    """os.execv replaces the process: a family of its own, each run in a child."""
    code = """
        import os, sys
        from skorch_loadfix.safe.hook import guarding
        with guarding("the test") if sys.argv[2] == "1" else open(os.devnull):
            os.execv("/usr/bin/touch", ["touch", sys.argv[1]])
    """
    marker = tmp_path / "marker"
    refused = run_python(code, str(marker), "1")
    assert "audit hook refused it" in refused.stderr and "os.exec" in refused.stderr
    assert not marker.exists()
    assert run_python(code, str(marker), "0").returncode == 0
    assert marker.exists()


def test_error_names_event_argument_and_where(tmp_path):
    marker = tmp_path / "marker"
    with pytest.raises(UntrustedPickleError) as error, guarding("load(net.pkl)"):
        open(marker, "w").close()
    assert isinstance(error.value, pickle.UnpicklingError)
    assert error.value.refused == {"open": f"{str(marker)!r}, 'w'"}
    message = str(error.value)
    assert message.startswith(
        f"load(net.pkl): while unpickling, something tried open({str(marker)!r}"
    )
    assert "do not load it" in message
    assert not marker.exists()


def test_guard_nests_and_ends_with_its_block(tmp_path):
    marker = tmp_path / "marker"
    with guarding("outer"):
        with pytest.raises(UntrustedPickleError, match="^inner: "), guarding("inner"):
            open(marker, "w").close()
        with pytest.raises(UntrustedPickleError, match="^outer: "):
            open(marker, "w").close()
    open(marker, "w").close()
    assert marker.exists()


def test_other_threads_are_unaffected(tmp_path):
    marker, done = tmp_path / "marker", threading.Event()
    errors = []

    def write():
        try:
            open(marker, "w").close()
        except Exception as error:
            errors.append(error)
        done.set()

    with guarding("the test"):
        thread = threading.Thread(target=write)
        thread.start()
        assert done.wait(10)
        with pytest.raises(UntrustedPickleError):
            open(tmp_path / "other", "w").close()
    thread.join()
    assert errors == [] and marker.exists()
    assert not (tmp_path / "other").exists()


def test_other_asyncio_tasks_are_unaffected(tmp_path):
    async def main():
        inside, leave = asyncio.Event(), asyncio.Event()

        async def guarded_load():
            with guarding("the test"):
                inside.set()
                await leave.wait()
                with pytest.raises(UntrustedPickleError):
                    open(tmp_path / "guarded", "w").close()

        async def other():
            await inside.wait()
            open(tmp_path / "other", "w").close()  # while the other task is guarded
            leave.set()

        await asyncio.gather(asyncio.create_task(guarded_load()), asyncio.create_task(other()))

    asyncio.run(main())
    assert (tmp_path / "other").exists() and not (tmp_path / "guarded").exists()


def test_resolving_permits_imports(tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    (tmp_path / f"{IMPORTED}.py").write_text(f"open({str(marker)!r}, 'w').close()")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, IMPORTED, raising=False)
    with guarding("the test"):
        with pytest.raises(UntrustedPickleError, match="import"):
            __import__(IMPORTED)
        assert not marker.exists()
        with resolving():
            __import__(IMPORTED)
    assert marker.exists()
    sys.modules.pop(IMPORTED, None)


# --- legit loads raise nothing the guard refuses --------------------------------------------


@pytest.fixture(scope="module")
def legit_files():
    net = fit(callbacks=[EpochScoring("accuracy")])
    files = {"native": pickle.dumps(net), **{writer: dumps(net, writer) for writer in WRITERS}}
    files["pipeline"] = pickle.dumps(Pipeline([("scale", StandardScaler()), ("net", fit())]))
    return files


def corpus():
    return {path.name: path.read_bytes() for path in sorted(CORPUS.glob("*.pkl"))}


@pytest.mark.parametrize("mode", ["load", "apply", "apply(strict=True)"])
def test_legit_nets_raise_no_refused_event(legit_files, mode):
    loaded, failed = [], {}
    with recording() as refused:
        for name, data in {**legit_files, **corpus()}.items():
            try:
                if mode == "load":
                    skorch_loadfix.load(io.BytesIO(data), allow=[Model, Block])
                else:
                    skorch_loadfix.apply(strict=mode != "apply")
                    try:
                        pickle.loads(data)
                    finally:
                        skorch_loadfix.revert()
                loaded.append(name)
            except Exception as error:
                failed[name] = error
    assert refused == []
    assert not any(isinstance(error, hook.RefusedEvent) for error in failed.values())
    assert {*legit_files, *corpus()} <= set(loaded), failed


def test_first_guarded_load_in_a_fresh_interpreter_raises_no_refused_event(tmp_path):
    """torch.load imports a module the first time it runs, and pickle's text opcodes their
    codecs; the hook imports them first."""
    fit_code = """
        import pickle, sys
        from models import fit
        open(sys.argv[1], "wb").write(pickle.dumps(fit()))
    """
    path = tmp_path / "net.pkl"
    assert run_python(fit_code, str(path)).returncode == 0
    load_code = """
        import sys
        import skorch_loadfix
        from skorch_loadfix.demo_model import Block, Model
        for path in sys.argv[1:]:
            skorch_loadfix.load(path, allow=[Model, Block])
    """
    text = tmp_path / "protocol0.pkl"  # text opcodes: their codecs are imported on first use
    text.write_bytes(pickle.dumps({"text": "é", "bytes": b"\xff"}, protocol=0))
    corpus_files = (str(CORPUS / name) for name in corpus())
    files = [str(path), str(text), *corpus_files]
    result = run_python(load_code, *files)
    assert result.returncode == 0, result.stderr


# --- a gadget nobody has found yet ----------------------------------------------------------

CALL_FLAWED = b"cflawed\nconvert\n(I1\ntR."  # flawed.convert(1): allowed by the caller


def gadgets(marker: Path, folder: Path):
    """What a flaw in an allowed function might do, each leaving the marker if it runs."""
    (folder / f"{IMPORTED}.py").write_text(f"open({str(marker)!r}, 'w').close()")
    return {
        "os.system": lambda: os.system(f"touch {marker}"),
        "open": lambda: open(marker, "w").close(),
        "import": lambda: __import__(IMPORTED),
        "exec": lambda: exec(f"open({str(marker)!r}, 'w').close()"),
    }


@pytest.fixture
def flawed_marker(tmp_path, monkeypatch, request):
    """flawed.convert, allowed through torch's safe globals, reaches the OS when called."""
    marker = tmp_path / "marker"
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, IMPORTED, raising=False)
    monkeypatch.setattr(flawed, "gadget", gadgets(marker, tmp_path)[request.param])
    with torch.serialization.safe_globals([flawed.convert]):
        yield marker
    sys.modules.pop(IMPORTED, None)


GADGETS = ["os.system", "open", "import", "exec"]


@pytest.mark.parametrize("flawed_marker", GADGETS, indirect=True)
def test_load_refuses_a_flawed_allowlisted_function(flawed_marker):
    with pytest.raises(UntrustedPickleError, match="audit hook refused it"):
        skorch_loadfix.load(io.BytesIO(CALL_FLAWED))
    assert not flawed_marker.exists()


@pytest.mark.parametrize("flawed_marker", GADGETS, indirect=True)
def test_without_the_hook_the_flawed_function_runs(flawed_marker, monkeypatch):
    """The control: the policy lets the call through; only the hook stops it."""
    monkeypatch.setattr(hook, "guarding", lambda where: contextlib.nullcontext())
    skorch_loadfix.load(io.BytesIO(CALL_FLAWED))
    assert flawed_marker.exists()


@pytest.fixture(scope="module")
def net_calling_in_blob():
    """A net whose blob is {"extra": flawed.convert(1)}."""
    net = fit()
    blob = b"(Vextra\n" + CALL_FLAWED[:-1] + b"d."
    return dumps_state(net, {**net.__getstate__(), BLOB: blob})


@pytest.mark.parametrize("flawed_marker", ["os.system", "open"], indirect=True)
@pytest.mark.parametrize("hooked", [True, False], ids=["hooked", "control"])
def test_strict_blob_read_refuses_a_flawed_allowlisted_function(
    net_calling_in_blob, flawed_marker, hooked, monkeypatch
):
    if not hooked:
        monkeypatch.setattr(readers, "guarding", lambda where: contextlib.nullcontext())
    skorch_loadfix.apply(strict=True)
    try:
        with pytest.raises(UntrustedPickleError) if hooked else contextlib.nullcontext():
            pickle.loads(net_calling_in_blob)
    finally:
        skorch_loadfix.revert()
    assert flawed_marker.exists() is not hooked


@pytest.mark.parametrize("audited", [True, False], ids=["audit and guard", "guard alone"])
def test_the_cached_call_chain_is_refused_and_runs_unguarded(tmp_path, monkeypatch, audited):
    """Issue 9's chain names only globals the old allowlist had: the policy refuses it at
    either line now (_cached_call is not allowed, and no function is ever built into)."""
    marker = tmp_path / "marker"
    if not audited:
        monkeypatch.setattr(verifier, "refuse_untrusted", lambda *args: None)
    with pytest.raises(UntrustedPickleError, match="_cached_call"):
        skorch_loadfix.load(io.BytesIO(cached_call_chain(marker)))
    assert not marker.exists()
    pickle.loads(cached_call_chain(marker))  # the control: live under plain pickle
    assert marker.exists()
