"""``python -m skorch_loadfix upgrade``: re-save old pickled nets so skorch reads them alone.

An old file loads here through the patch (or ``load()``), and is written back as
the installed skorch writes it: then the installed release reads it without
skorch-loadfix, and its names, state and blob format are today's. A net inside a
Pipeline or a search object is upgraded with its container, which is kept, and the
file is written as it was read (pickle, joblib with its compression, ``torch.save``)
unless ``--format`` says otherwise. Every write goes to a temporary file or folder
beside the target, is flushed to disk, made readable as the umask says, and replaces
the target in one rename, so an interrupted upgrade leaves the target as it was.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import inspect
import io
import json
import mmap
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from .load_kwargs import checked_device, load_onto

# What a fresh interpreter runs for --check: no skorch_loadfix anywhere in it.
_CHECK = """
import json, pickle, sys
from pathlib import Path
import numpy as np
out, fmt, X = Path(sys.argv[1]), sys.argv[2], np.load(sys.argv[3])
if fmt == "pickle":
    with open(out, "rb") as f:
        net = pickle.load(f)
elif fmt == "joblib":
    import joblib
    net = joblib.load(out)
elif fmt == "torch.save":
    import torch
    net = torch.load(out, weights_only=False)
else:
    spec = json.loads((out / "net.json").read_text())
    with open(out / "net.pkl", "rb") as f:
        net = pickle.load(f)
    net.initialize()
    net.load_params(**{k: str(out / v) for k, v in spec["files"].items()},
                    **spec["load_params_kwargs"])
np.save(sys.argv[4], net.predict_proba(X))
assert "skorch_loadfix" not in sys.modules
"""
FORMATS = ("pickle", "joblib", "torch.save", "params")


class UpgradeError(Exception):
    """One file could not be upgraded; the message says why and what to do."""


class UsageError(UpgradeError):
    """The command line asks for something upgrade never does (overwrite IN, say)."""


class NoNet(UpgradeError):
    """The file is no pickled net by its content (text, an .npz, a state_dict's safetensors)."""


@dataclass(frozen=True)
class Options:
    format: str | None = None  # None: as the file was written
    allow: tuple[str, ...] = ()
    trusted: bool = False
    force: bool = False
    check: bool = False
    device: str | None = None  # load_onto(): where the net and all its tensors go


@dataclass(frozen=True)
class Written:
    """How a file was written: what upgrade writes back unless told otherwise."""

    format: str  # pickle, joblib or torch.save
    compression: str | None = None  # joblib's compressor
    binary: bool = True  # a pickle of protocol 2 or later (0 and 1 are text)


def blocked_allow(allow: Sequence[str]) -> str | None:
    """The usage error for an ``--allow`` of a name on the hard blocklist, or None."""
    from .safe.policy import blocked

    names = [name for name in allow if blocked(name)]
    if not names:
        return None
    return (
        f"--allow {names[0]}: on the hard blocklist (it can run code, touch files or unpickle "
        "again), so nothing can allow it; only --trusted reads such a file, and only if you "
        "trust all of it"
    )


def upgrade_file(source: Path, target: Path, options: Options) -> str:
    """Upgrade one file; return a one-line summary, or raise ``UpgradeError``."""
    if target.exists() and target.resolve() == source.resolve():
        raise UsageError("OUT is IN: upgrade never overwrites its input; name another OUT")
    if target.exists() and not options.force:
        raise UsageError(f"{target} exists; pass --force to replace it")
    written = _written(source)
    onto = contextlib.nullcontext() if options.device is None else load_onto(options.device)
    with onto:
        found = _load(source, written, options)
    nets = _nets(found)
    format = options.format or written.format
    compression = written.compression if format == written.format else None
    if format == "params" and (len(nets) != 1 or nets[0] is not found):
        raise UsageError(
            f"--format params saves one net's parameters, and the file holds "
            f"{_describe(found)}; upgrade it as --format pickle, joblib or torch.save"
        )
    try:
        if format == "params":
            write_atomically(target, lambda folder: _save_params(found, folder), folder=True)
        else:
            data = _dumps(found, format, compression)
            _refuse_stand_ins(pickle.dumps(found) if compression else data)
            write_atomically(target, lambda path: path.write_bytes(data))
    except OSError as exc:
        why = _first_line(exc)
        raise UpgradeError(f"could not write {target} ({why}); left as it was") from exc
    how = f"{format} ({compression})" if compression else format
    summary = f"{_describe(found)} as the installed skorch's {how}"
    if options.check:
        try:
            summary += f"; {check(found, target, format)}"
        except UpgradeError as exc:  # what was written, then why the check failed
            raise UpgradeError(f"{summary}; {exc}") from exc
    return summary


def _written(source: Path) -> Written:
    """What wrote ``source``, from its content: joblib files hold joblib's array wrappers
    (or are compressed, as only joblib among the writers here does)."""
    from .content import NotAPickledNet, readable

    try:
        with open(source, "rb") as file, _contents(file) as data:
            with memoryview(data) as view:
                content = readable(view)
            wrappers = data.find(b"NumpyArrayWrapper") >= 0
            binary = data[:1] == b"\x80"
    except OSError as exc:
        raise UpgradeError(f"could not read it ({_first_line(exc)})") from exc
    except NotAPickledNet as exc:
        raise NoNet(str(exc)) from None
    if content.torch_save:
        return Written("torch.save")
    if content.compression is not None or wrappers:
        return Written("joblib", content.compression)
    return Written("pickle", binary=binary)


@contextlib.contextmanager
def _contents(file: IO[bytes]) -> Iterator[mmap.mmap | bytes]:
    """The file's bytes, mapped (an empty file can't be)."""
    if os.fstat(file.fileno()).st_size == 0:
        yield b""
        return
    with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapping:
        yield mapping


def _dumps(found: Any, format: str, compression: str | None) -> bytes:
    """``found`` as the installed libraries write it in ``format``."""
    if format == "pickle":
        return pickle.dumps(found)
    buffer = io.BytesIO()
    if format == "torch.save":
        import torch

        torch.save(found, buffer)
    else:
        import joblib

        joblib.dump(found, buffer, compress=(compression, 3) if compression else 0)
    return buffer.getvalue()


def _load(source: Path, written: Written, options: Options) -> Any:
    import skorch_loadfix

    try:
        if options.trusted:
            with _applied(), skorch_loadfix.torch_load_kwargs(weights_only=False):
                return _trusted_load(source, written)
        return skorch_loadfix.load(source, allow=options.allow)
    except skorch_loadfix.UntrustedPickleError as exc:
        raise UpgradeError(_refusal(exc)) from exc
    except (pickle.UnpicklingError, EOFError, ValueError, RuntimeError) as exc:
        from .content import NotAPickledNet

        if isinstance(exc, NotAPickledNet):
            raise UpgradeError(str(exc)) from exc
        why = _first_line(exc).removeprefix("UnpicklingError: not a readable pickle ")
        raise UpgradeError(f"not a readable pickle: {why}") from exc
    except (AttributeError, ImportError) as exc:
        raise UpgradeError(
            f"it needs something this Python cannot import ({_first_line(exc)}): install "
            "or define the module or class the net was built with, then upgrade again"
        ) from exc
    except OSError as exc:
        raise UpgradeError(f"could not read it ({_first_line(exc)})") from exc


def _trusted_load(source: Path, written: Written) -> Any:
    """The file read as its writer's own reader does: for a file you trust entirely."""
    if written.format == "torch.save":
        import torch

        return torch.load(source, weights_only=False)
    if written.format == "joblib":
        import joblib

        return joblib.load(source)
    with open(source, "rb") as file:
        return pickle.load(file)


def _refusal(exc: Any) -> str:
    """load()'s refusal as CLI advice: the --allow flags that would help, on one line."""
    allowable = sorted(name for name, why in exc.refused.items() if why.startswith("not allowed"))
    others = sorted(set(exc.refused) - set(allowable))
    what = "; ".join(f"{name}: {exc.refused[name]}" for name in [*allowable, *others])
    if allowable and not others:
        flags = " ".join(f"--allow {name}" for name in allowable)
        return (
            f"load() refuses it ({what}); if you trust these classes, pass {flags}; "
            "if you trust the whole file, --trusted"
        )
    return (
        f"load() refuses it ({what}); no --allow can help with that: pass --trusted only "
        "if you trust the whole file"
    )


def _nets(found: Any) -> list[Any]:
    """The skorch nets in ``found``: itself, or in scikit-learn estimators at any depth (a
    Pipeline's steps, a search object's template ``estimator`` and its ``best_estimator_``)."""
    import skorch
    from sklearn.base import BaseEstimator

    nets, seen, todo = [], set(), [found]
    while todo:
        part = todo.pop()
        if id(part) in seen:
            continue
        seen.add(id(part))
        if isinstance(part, skorch.NeuralNet):
            nets.append(part)
        elif isinstance(part, BaseEstimator):
            todo += [*part.get_params(deep=False).values(), getattr(part, "best_estimator_", 0)]
        elif isinstance(part, (list, tuple)):
            todo += part
    if not nets:
        kind = f"{type(found).__module__}.{type(found).__name__}"
        raise UpgradeError(f"it holds no skorch net: it is a {kind}")
    return nets[::-1]


@contextlib.contextmanager
def _applied() -> Iterator[None]:
    import skorch_loadfix

    was_applied = skorch_loadfix.is_applied()
    skorch_loadfix.apply()
    try:
        yield
    finally:
        if not was_applied:
            skorch_loadfix.revert()


def _refuse_stand_ins(data: bytes) -> None:
    from . import stand_ins

    # Module names are plain text in every pickle protocol, and torch.save zips are stored;
    # a compressed file's are not: it is checked as a pickle.
    if stand_ins.__name__.encode() in data:
        raise UpgradeError(
            "the net holds a skorch-loadfix stand-in (skorch 0.5's filtered_optimizer); "
            "without skorch-loadfix nothing could read the result. Rebuild the net with "
            "skorch.callbacks.Freezer instead, or keep loading the old file with the patch"
        )


def _save_params(net: Any, folder: Path) -> None:
    """``save_params`` files, and net.json saying how to rebuild the net around them."""
    # skorch >= 0.15 writes safetensors, if the (optional) safetensors package is installed.
    safetensors = "use_safetensors" in inspect.signature(net.save_params).parameters
    safetensors = safetensors and importlib.util.find_spec("safetensors") is not None
    params = "module.safetensors" if safetensors else "module.pt"
    kwargs = {"use_safetensors": True} if safetensors else {}
    net.save_params(f_params=folder / params, **kwargs)
    net.save_params(f_history=folder / "history.json")
    # An uninitialized copy: the rebuild recipe for load_params, pickled by this skorch.
    (folder / "net.pkl").write_bytes(pickle.dumps(_unfitted(net)))
    spec = {
        "net": f"{type(net).__module__}.{type(net).__qualname__}",
        "init_params": {k: _jsonable(v) for k, v in sorted(net.get_params(deep=False).items())},
        "files": {"f_params": params, "f_history": "history.json"},
        "load_params_kwargs": kwargs,
        "how": "net = pickle.load(open('net.pkl', 'rb')) (or build it from init_params); "
        "net.initialize(); net.load_params(f_params=..., f_history=..., "
        "**load_params_kwargs)",
    }
    (folder / "net.json").write_text(json.dumps(spec, indent=1) + "\n")


def _unfitted(net: Any) -> Any:
    from sklearn.base import clone

    # Loading turned `device` into a torch.device; safetensors takes only its name.
    return clone(net).set_params(device=str(net.device))


def _jsonable(value: Any) -> Any:
    """The value, a class or function by its name, a partial by its parts, else its repr."""
    if isinstance(value, functools.partial):
        kwargs = {k: _jsonable(v) for k, v in value.keywords.items()}
        return {"partial": _jsonable(value.func), "args": _jsonable(value.args), **kwargs}
    if inspect.isclass(value) or inspect.isfunction(value):
        return {"global": f"{value.__module__}.{value.__qualname__}"}
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


def _module_name(net: Any) -> str:
    module = getattr(net, "module_", net.module)  # a search's template is not initialized
    return module.__name__ if isinstance(module, type) else type(module).__name__


def _describe(found: Any) -> str:
    nets = _nets(found)
    each = ", ".join(f"{type(net).__name__} with {_module_name(net)}" for net in nets)
    if len(nets) == 1 and nets[0] is found:
        return each
    return f"{type(found).__name__} holding {len(nets)} net{'s' * (len(nets) > 1)} ({each})"


def write_atomically(target: Path, write: Callable[[Path], Any], *, folder: bool = False) -> None:
    """Have ``write`` fill a temporary file (or folder) beside ``target``, then rename it.

    Flushed to disk before the rename; on any failure the temporary goes and
    ``target`` is untouched. ``tempfile`` makes the temporary private (0600, a folder 0700);
    the result gets the mode any new file gets here (0666, a folder 0777, less the umask),
    so that a server running as another user can read it where the umask lets it.
    """
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}."
    if folder:
        temporary = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=parent))
    else:
        handle, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=parent)
        os.close(handle)
        temporary = Path(name)
    try:
        write(temporary)
        temporary.chmod((0o777 if folder else 0o666) & ~_umask())
        for path in [*temporary.iterdir()] if folder else [temporary]:
            _fsync(path)
        _replace(temporary, target)
        _fsync(parent)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True) if folder else temporary.unlink(True)
        raise


def _umask() -> int:
    """The process's umask: setting it is the only way to read it on every Python."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _replace(temporary: Path, target: Path) -> None:
    if temporary.is_dir() and target.exists():  # a folder cannot replace a folder in one step
        aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
        os.replace(target, aside / target.name)
        os.replace(temporary, target)
        shutil.rmtree(aside)
    else:
        os.replace(temporary, target)


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def check(found: Any, target: Path, format: str) -> str:
    """Load ``target`` in a fresh interpreter without the patch; compare predictions."""
    module = next(net.module_ for net in _nets(found) if hasattr(net, "module_"))
    width = getattr(found, "n_features_in_", None) or next(
        (m.in_features for m in module.modules() if hasattr(m, "in_features")), None
    )
    if width is None:
        return "check skipped: the module has no layer with in_features to size input by"
    X = np.random.RandomState(0).randn(16, width).astype("float32")
    with tempfile.TemporaryDirectory() as scratch:
        given, got = Path(scratch, "X.npy"), Path(scratch, "y.npy")
        np.save(given, X)
        env = {k: v for k, v in os.environ.items() if k != "SKORCH_LOADFIX"}
        run = subprocess.run(
            [sys.executable, "-c", _CHECK, str(target), format, str(given), str(got)],
            capture_output=True,
            text=True,
            env=env,
        )
        if run.returncode != 0:
            last = (run.stderr.strip().splitlines() or ["no output"])[-1]
            hint = "" if format == "params" else "; --format params writes files it reads"
            raise UpgradeError(
                f"--check: unpatched skorch cannot load the result ({last}); {target} was "
                f"written all the same{hint}, and --check checks them"
            )
        if not np.allclose(np.load(got), found.predict_proba(X), rtol=1e-5, atol=1e-6):
            raise UpgradeError("--check: unpatched skorch loads the result, but predicts otherwise")
    return "checked: unpatched skorch in a fresh interpreter predicts the same"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def upgrade_tree(source: Path, target: Path, options: Options) -> int:
    """Every file under ``source`` to the same place under ``target``; 1 if any failed."""
    files = sorted(p for p in source.rglob("*") if p.is_file())
    rows: list[tuple[str, str, str]] = []
    for number, path in enumerate(files, 1):
        relative = path.relative_to(source)
        print(f"[{number}/{len(files)}] {relative}", file=sys.stderr, flush=True)
        try:
            if not _written(path).binary:
                rows.append((str(relative), "skipped", "not a pickle (no protocol 2+ header)"))
                continue
            rows.append((str(relative), "done", upgrade_file(path, target / relative, options)))
        except NoNet as exc:
            rows.append((str(relative), "skipped", str(exc)))
        except UpgradeError as exc:
            rows.append((str(relative), "failed", str(exc).splitlines()[0]))
    _print_table(rows)
    return 1 if any(status == "failed" for _, status, _ in rows) else 0


def _print_table(rows: Sequence[tuple[str, str, str]]) -> None:
    width = max([len("file"), *(len(name) for name, _, _ in rows)])
    print(f"{'file':{width}}  {'result':7}  why / what")
    for name, status, why in rows:
        print(f"{name:{width}}  {status:7}  {why}")
    counts = {s: sum(row[1] == s for row in rows) for s in ("done", "skipped", "failed")}
    print(", ".join(f"{n} {s}" for s, n in counts.items()))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source", type=Path, metavar="IN", help="a pickle, joblib or torch.save file, or a folder"
    )
    parser.add_argument("target", type=Path, nargs="?", metavar="OUT", help="where to write it")
    parser.add_argument("--out", type=Path, help="with a folder IN: the folder to write to")
    parser.add_argument(
        "--format",
        choices=FORMATS,
        help="default: as IN was written (pickle; joblib, with its compression; torch.save); "
        "params: a folder with one net's save_params files (safetensors where skorch has "
        "them), net.pkl and net.json",
    )
    parser.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="MODULE.QUALNAME",
        help="a global load() may resolve besides its allowlist (repeatable)",
    )
    parser.add_argument(
        "--trusted",
        action="store_true",
        help="load with the file's own reader (pickle.load, joblib.load or torch.load) and "
        "weights_only=False instead of load(): only for files you trust, since unpickling "
        "runs whatever they name",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing OUT")
    parser.add_argument(
        "--device",
        help="load the net and every tensor it holds onto this device (cpu, cuda:1, mps), "
        "whatever device it was saved on; net.device is set to it",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="load the result in a fresh interpreter without skorch-loadfix and compare "
        "predictions on random input of the module's width",
    )


def run(args: argparse.Namespace) -> int:
    """Exit status: 0 done, 1 a file failed, 2 a usage error."""
    options = Options(
        args.format, tuple(args.allow), args.trusted, args.force, args.check, args.device
    )
    source: Path = args.source
    if args.device is not None:
        try:
            checked_device(args.device, "--device")
        except ValueError as exc:
            return _usage(str(exc))
    if blocked_allow(options.allow):
        return _usage(blocked_allow(options.allow) or "")
    if not source.exists():
        return _usage(f"{source} does not exist")
    if source.is_dir():
        if args.out is None or args.target is not None:
            return _usage("upgrading a folder takes --out FOLDER and no OUT")
        if args.out.resolve() == source.resolve():
            return _usage("--out is IN: upgrade never overwrites its input")
        return upgrade_tree(source, args.out, options)
    if args.target is None or args.out is not None:
        return _usage("upgrading a file takes OUT (--out is for folders)")
    try:
        print(f"{source} -> {args.target}: {upgrade_file(source, args.target, options)}")
    except UpgradeError as exc:
        print(f"skorch-loadfix upgrade: {source}: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, UsageError) else 1
    return 0


def _usage(message: str) -> int:
    print(f"skorch-loadfix upgrade: {message}", file=sys.stderr)
    return 2
