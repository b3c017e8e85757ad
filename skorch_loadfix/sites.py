"""Where the installed skorch loads torch objects, found by probing, and what replaces each.

Each patch is chosen by what the installed skorch has (a constructor parameter, a
plain function with a ``torch.load`` in it), not by its version string, so a
backported fix or a vendored copy is handled by what it does.
"""

from __future__ import annotations

import contextvars
import inspect
import sys
import types
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from packaging.version import Version

from . import devices, legacy
from .formats import BLOB
from .load_kwargs import checked, effective, is_strict
from .safe.policy import policy as make_policy
from .safe.readers import restore
from .safe.verifier import audit_blob, refuse_untrusted
from .status import CallSite

NEWEST_TESTED_SKORCH = Version("1.4.0")

Fallback = Callable[[], Mapping[str, Any]]
Wrapper = Callable[[Callable[..., Any], Any, tuple[Any, ...], dict[str, Any]], Any]


@dataclass(frozen=True)
class Patch:
    owner: type | types.ModuleType
    attribute: str
    site: CallSite
    wrapper: Wrapper
    wraps: Callable[..., Any] | None = None  # what to wrap instead of owner.attribute


def plan(net_module: types.ModuleType, skorch_version: str) -> list[Patch]:
    """The patches the installed skorch needs, warning about what its probes don't match."""
    net_cls = net_module.NeuralNet
    if skorch_version == "unknown" or Version(skorch_version) > NEWEST_TESTED_SKORCH:
        warnings.warn(
            f"skorch-loadfix: skorch {skorch_version} is not a release it was tested with "
            f"(0.12.1 to {NEWEST_TESTED_SKORCH}); patching only what it recognises",
            RuntimeWarning,
            stacklevel=3,
        )
    has_param = "torch_load_kwargs" in inspect.signature(net_cls.__init__).parameters

    def fallback() -> dict[str, Any]:
        return _skorch_default(net_module, has_param)

    def patch(attribute: str, what: str, wrapper: Wrapper) -> Patch:
        return Patch(net_cls, attribute, CallSite(f"NeuralNet.{attribute}", what), wrapper)

    patches = []
    if _loads_torch(net_cls, "__setstate__") and hasattr(net_module, "get_map_location"):
        what = "reads all three blob formats; each load gets the effective kwargs: "
        what += "weights_only=True restricts a torch.save blob, a pickle one's tensor streams"
        patches.append(patch("__setstate__", what, _setstate(net_module, fallback)))
    if _loads_torch(net_cls, "load_params"):
        passes = "only the net's own kwargs" if has_param else "no kwargs"
        what = f"torch.load gets the effective kwargs (skorch {skorch_version} passes {passes})"
        original = net_cls.__dict__["load_params"]
        patches.append(patch("load_params", what, _load_params(original, fallback, has_param)))
    what = "checks torch_load_kwargs at initialize() and set_params()"
    patches.append(patch("_validate_params", what, _validate_params))
    if not has_param:
        what = "accepts torch_load_kwargs=None, kept by get_params, clone and pickle"
        patches.append(patch("__init__", what, _init_with_param))
    what = "fills in the `defaults` that optimizers pickled by torch 1.0 lack"
    site = CallSite("torch.optim.Optimizer.__setstate__", what)
    patches.append(Patch(torch.optim.Optimizer, "__setstate__", site, legacy.optimizer_setstate))
    what = "a storage whose device this machine lacks loads on the CPU, with a DeviceWarning "
    what += "(unless apply(remap_devices=False)); "
    what += "load_onto() sends every storage to its device"
    site = CallSite("torch.storage._load_from_bytes", what)
    patches.append(Patch(torch.storage, "_load_from_bytes", site, devices.load_from_bytes))
    patches += _forgetting_on_pickle()
    return patches


def _forgetting_on_pickle() -> list[Patch]:
    """skorch PR #1150's ``__getstate__``, for each callback whose skorch has none of its own."""
    patches = []
    for name, attributes in devices.REBUILT.items():
        module, _, qualname = name.rpartition(".")
        owner = getattr(sys.modules.get(module), qualname, None)
        if owner is None or "__getstate__" in vars(owner):
            continue
        dropped = ", ".join(attributes)
        what = f"pickles without {dropped}, rebuilt in training (skorch PR #1150)"
        site = CallSite(f"{qualname}.__getstate__", what)
        wrapper = devices.forgetting(attributes)
        patches.append(Patch(owner, "__getstate__", site, wrapper, devices.instance_state))
    return patches


def _loads_torch(owner: type, attribute: str) -> bool:
    """Whether ``owner.attribute`` is skorch's own function and calls ``torch.load``."""
    func = owner.__dict__.get(attribute)
    found = inspect.isfunction(func) and any(
        {"torch", "load"} <= set(code.co_names) for code in _code_objects(func.__code__)
    )
    if not found:
        warnings.warn(
            f"skorch-loadfix: {owner.__name__}.{attribute} is not the function it "
            "expected (already wrapped, or changed in this skorch); left unpatched",
            RuntimeWarning,
            stacklevel=4,
        )
    return found


def _code_objects(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


def _skorch_default(net_module: types.ModuleType, has_param: bool) -> dict[str, Any]:
    """What the installed skorch passes when a net sets no ``torch_load_kwargs``.

    Asked at each load, not once, as skorch itself does.
    """
    getter = getattr(net_module, "get_default_torch_load_kwargs", None)
    if getter is not None:  # skorch 1.1 and 1.2
        return dict(getter())
    if has_param:  # skorch >= 1.3 hard-codes it
        return {"weights_only": True}
    # skorch <= 1.0 has none: follow torch's own default, as skorch 1.1 did.
    return {"weights_only": Version(torch.__version__).release >= (2, 6)}


def _setstate(net_module: types.ModuleType, fallback: Fallback) -> Wrapper:
    def setstate(wrapped: Any, net: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        (state,) = args
        where = f"{type(net).__name__}.__setstate__"
        strict = is_strict()  # then the file's own kwargs can't loosen anything
        file_kwargs = None if strict else state.get("torch_load_kwargs")
        load_kwargs = effective(file_kwargs, where, fallback, in_memory=True)
        # weights_only=False is the caller's statement of trust (issue 9): upstream's
        # reading. Under strict only the caller can make it: the file's kwargs don't count.
        guarded = bool(load_kwargs["weights_only"])
        policy = make_policy(imported_components=True) if guarded else None
        if strict and policy is not None:
            refuse_untrusted(audit_blob(state[BLOB], policy, where), where)
        restore(net_module, net, state, load_kwargs, where, policy, like_skorch=not strict)

    return setstate


_load_params_kwargs: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar(
    "skorch_loadfix.load_params_kwargs"
)


def _load_params(original: Callable[..., Any], fallback: Fallback, has_param: bool) -> Wrapper:
    """``has_param``: this skorch passes the net's own kwargs to its ``torch.load`` itself."""
    rebound = _with_torch_load(original, _torch_load_in_load_params)

    def load_params(wrapped: Any, net: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        where = f"{type(net).__name__}.load_params"
        net_kwargs = getattr(net, "torch_load_kwargs", None)
        load_kwargs = effective(net_kwargs, where, fallback, skorch_passes_own=has_param)
        token = _load_params_kwargs.set(load_kwargs)
        try:
            return rebound(net, *args, **kwargs)
        finally:
            _load_params_kwargs.reset(token)

    return load_params


def _torch_load_in_load_params(f: Any, map_location: Any, **skorch_kwargs: Any) -> Any:
    # skorch_kwargs are the net's own or skorch's default: already weighed by effective().
    return torch.load(f, map_location=map_location, **_load_params_kwargs.get())


class _TorchWithLoad(types.ModuleType):
    """``torch`` as a rebound function sees it: the same module but for ``load``."""

    def __init__(self, load: Callable[..., Any]) -> None:
        super().__init__("torch")
        self.load = load

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)


def _with_torch_load(func: Callable[..., Any], load: Callable[..., Any]) -> Callable[..., Any]:
    """A copy of ``func`` that calls ``load`` wherever it calls ``torch.load``.

    ``load_params`` calls ``torch.load`` from a closure it defines on each call, out
    of any wrapper's reach; running the very same code object with ``torch`` rebound
    in (a snapshot of) its globals reaches that call without copying skorch's source.
    """
    assert isinstance(func, types.FunctionType)
    namespace = dict(func.__globals__, torch=_TorchWithLoad(load))
    rebound = types.FunctionType(
        func.__code__, namespace, func.__name__, func.__defaults__, func.__closure__
    )
    rebound.__kwdefaults__ = func.__kwdefaults__
    return rebound


def _validate_params(wrapped: Any, net: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    value = getattr(net, "torch_load_kwargs", None)
    if value is not None:
        checked(value, f"{type(net).__name__}(torch_load_kwargs=...)")
    return wrapped(*args, **kwargs)


def _init_with_param(wrapped: Any, net: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    value = kwargs.pop("torch_load_kwargs", None)
    wrapped(*args, **kwargs)
    net.torch_load_kwargs = value
