"""``python -m skorch_loadfix upgrade``: re-save old pickled nets so skorch reads them alone.

An old file loads here through the patch (or ``load()``), and is written back as
the installed skorch writes it: then the installed release reads it without
skorch-loadfix, and its names, state and blob format are today's. Every write goes
to a temporary file or folder beside the target, is flushed to disk, and replaces
the target in one rename, so an interrupted upgrade leaves the target as it was.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import inspect
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
else:
    import importlib, torch
    spec = json.loads((out / "net.json").read_text())
    with open(out / "net.pkl", "rb") as f:
        net = pickle.load(f)
    net.initialize()
    net.load_params(**{k: str(out / v) for k, v in spec["files"].items()},
                    **spec["load_params_kwargs"])
np.save(sys.argv[4], net.predict_proba(X))
assert "skorch_loadfix" not in sys.modules
"""


class UpgradeError(Exception):
    """One file could not be upgraded; the message says why and what to do."""


class UsageError(UpgradeError):
    """The command line asks for something upgrade never does (overwrite IN, say)."""


@dataclass(frozen=True)
class Options:
    format: str = "pickle"
    allow: tuple[str, ...] = ()
    trusted: bool = False
    force: bool = False
    check: bool = False
    device: str | None = None  # load_onto(): where the net and all its tensors go


def upgrade_file(source: Path, target: Path, options: Options) -> str:
    """Upgrade one file; return a one-line summary, or raise ``UpgradeError``."""
    if target.exists() and target.resolve() == source.resolve():
        raise UsageError("OUT is IN: upgrade never overwrites its input; name another OUT")
    if target.exists() and not options.force:
        raise UsageError(f"{target} exists; pass --force to replace it")
    onto = contextlib.nullcontext() if options.device is None else load_onto(options.device)
    with onto:
        net = _load(source, options)
    try:
        if options.format == "pickle":
            data = pickle.dumps(net)
            _refuse_stand_ins(data)
            write_atomically(target, lambda path: path.write_bytes(data))
        else:
            write_atomically(target, lambda folder: _save_params(net, folder), folder=True)
    except OSError as exc:
        why = _first_line(exc)
        raise UpgradeError(f"could not write {target} ({why}); left as it was") from exc
    summary = f"{_describe(net)} as the installed skorch's {options.format}"
    if options.check:
        summary += f"; {check(net, target, options.format)}"
    return summary


def _load(source: Path, options: Options) -> Any:
    import skorch

    import skorch_loadfix

    try:
        if options.trusted:
            with (
                _applied(),
                skorch_loadfix.torch_load_kwargs(weights_only=False),
                open(source, "rb") as file,
            ):
                net = pickle.load(file)
        else:
            net = skorch_loadfix.load(source, allow=options.allow)
    except skorch_loadfix.UntrustedPickleError as exc:
        raise UpgradeError(f"load() refuses it: {exc} (or pass --trusted)") from exc
    except (pickle.UnpicklingError, EOFError, ValueError) as exc:
        why = _first_line(exc).removeprefix("UnpicklingError: not a readable pickle ")
        raise UpgradeError(f"not a readable pickle: {why}") from exc
    except (AttributeError, ImportError) as exc:
        raise UpgradeError(
            f"it needs something this Python cannot import ({_first_line(exc)}): install "
            "or define the module or class the net was built with, then upgrade again"
        ) from exc
    if not isinstance(net, skorch.NeuralNet):
        raise UpgradeError(f"not a skorch net but a {type(net).__module__}.{type(net).__name__}")
    return net


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

    # Module names are plain text in every pickle protocol, and torch.save zips are stored.
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


def _describe(net: Any) -> str:
    return f"{type(net).__name__} with {type(net.module_).__name__}"


def write_atomically(target: Path, write: Callable[[Path], Any], *, folder: bool = False) -> None:
    """Have ``write`` fill a temporary file (or folder) beside ``target``, then rename it.

    Flushed to disk before the rename; on any failure the temporary goes and
    ``target`` is untouched.
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
        for path in [*temporary.iterdir()] if folder else [temporary]:
            _fsync(path)
        _replace(temporary, target)
        _fsync(parent)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True) if folder else temporary.unlink(True)
        raise


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


def check(net: Any, target: Path, format: str) -> str:
    """Load ``target`` in a fresh interpreter without the patch; compare predictions."""
    width = next((m.in_features for m in net.module_.modules() if hasattr(m, "in_features")), None)
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
            raise UpgradeError(f"--check: unpatched skorch cannot load the result: {last}")
        if not np.allclose(np.load(got), net.predict_proba(X), rtol=1e-5, atol=1e-6):
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
        if not _looks_like_pickle(path):
            rows.append((str(relative), "skipped", "not a pickle (no protocol 2+ header)"))
            continue
        try:
            rows.append((str(relative), "done", upgrade_file(path, target / relative, options)))
        except UpgradeError as exc:
            rows.append((str(relative), "failed", str(exc).splitlines()[0]))
    _print_table(rows)
    return 1 if any(status == "failed" for _, status, _ in rows) else 0


def _looks_like_pickle(path: Path) -> bool:
    with open(path, "rb") as file:
        return file.read(1) == b"\x80"


def _print_table(rows: Sequence[tuple[str, str, str]]) -> None:
    width = max([len("file"), *(len(name) for name, _, _ in rows)])
    print(f"{'file':{width}}  {'result':7}  why / what")
    for name, status, why in rows:
        print(f"{name:{width}}  {status:7}  {why}")
    counts = {s: sum(row[1] == s for row in rows) for s in ("done", "skipped", "failed")}
    print(", ".join(f"{n} {s}" for s, n in counts.items()))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", type=Path, metavar="IN", help="a pickled net, or a folder")
    parser.add_argument("target", type=Path, nargs="?", metavar="OUT", help="where to write it")
    parser.add_argument("--out", type=Path, help="with a folder IN: the folder to write to")
    parser.add_argument(
        "--format",
        choices=["pickle", "params"],
        default="pickle",
        help="pickle: the installed skorch's own pickle (default); params: a folder with "
        "save_params files (safetensors where skorch has them), net.pkl and net.json",
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
        help="load with pickle.load and weights_only=False instead of load(): only for "
        "files you trust, since unpickling runs whatever they name",
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
