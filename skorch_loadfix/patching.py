"""Installing and removing the wrappers: apply(), revert() and what they share.

Every wrapper records the exact attribute it replaced, and only after it is in
place; revert() undoes them last-first. A wrapper that someone else has wrapped in
turn is switched off instead of torn out, so their wrapper keeps working.
"""

from __future__ import annotations

import sys
import threading
import types
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import wrapt

from . import load_kwargs
from .status import Status, installed_version

if TYPE_CHECKING:
    from .legacy import Alias, Translation
    from .sites import Patch

_MISSING = object()  # the attribute was inherited, not in the class's own __dict__
_lock = threading.RLock()
_wanted = False
_hook_registered = False
_activated_by: str | None = None
_layers: list[_Layer] = []
_aliases: list[Alias] = []  # old names made to resolve (legacy.install), removed last-first
_translations: tuple[Translation, ...] = ()


@dataclass(eq=False)
class _Layer:
    patch: Patch
    original: Any
    enabled: bool = True
    wrapper: Any = field(default=None)

    def __call__(
        self, wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if not self.enabled:
            return wrapped(*args, **kwargs)
        return self.patch.wrapper(wrapped, instance, args, kwargs)

    def install(self) -> None:
        owner, name = self.patch.owner, self.patch.attribute
        target = getattr(owner, name) if self.patch.wraps is None else self.patch.wraps
        proxy = _ByName if isinstance(owner, types.ModuleType) else wrapt.FunctionWrapper
        self.wrapper = proxy(target, self)
        setattr(owner, name, self.wrapper)

    def remove(self) -> None:
        owner, name = self.patch.owner, self.patch.attribute
        if owner.__dict__.get(name) is not self.wrapper:
            self.enabled = False
            warnings.warn(
                f"skorch_loadfix.revert(): {owner.__name__}.{name} was wrapped again after "
                "apply(); that wrapper stays in place and skorch-loadfix's layer under it "
                "is switched off",
                RuntimeWarning,
                stacklevel=3,
            )
        elif self.original is _MISSING:
            delattr(owner, name)
        else:
            setattr(owner, name, self.original)


class _ByName(wrapt.FunctionWrapper):  # type: ignore[type-arg]
    """A module's function, wrapped: pickled by its name, as the function itself is
    (``torch.storage._load_from_bytes`` is how every pickled tensor names its storage)."""

    def __reduce_ex__(self, protocol: Any) -> str:
        return str(self.__qualname__)

    def __reduce__(self) -> str:
        return str(self.__qualname__)


def apply(
    *,
    torch_load_kwargs: Mapping[str, Any] | None = None,
    strict: bool = False,
    remap_devices: bool = True,
) -> None:
    """Make every ``torch.load`` skorch does honour ``torch_load_kwargs``.

    Patches skorch now if it is imported, else the moment ``skorch.net`` is.
    Idempotent and thread-safe; ``torch_load_kwargs`` becomes the process-wide
    default for nets that carry none, and ``strict`` whether unpickling ignores the
    kwargs a pickled net carries and audits its blob first (each call replaces all three).
    ``strict`` cannot restrict the outer pickle, which is the caller's own
    ``pickle.load``: for files you don't trust, use ``skorch_loadfix.load()``.
    ``remap_devices``: a tensor in the outer pickle that torch cannot load, because the
    device it was saved on is missing here, loads on the CPU with a ``DeviceWarning``
    instead of failing (see ``skorch_loadfix.devices``).
    """
    activate("apply()", torch_load_kwargs, strict=strict, remap_devices=remap_devices)


def activate(
    activation: str,
    torch_load_kwargs: Mapping[str, Any] | None = None,
    *,
    strict: bool = False,
    remap_devices: bool = True,
) -> None:
    """``apply()``, noting how it was asked for; ``status()`` names the first."""
    global _wanted, _hook_registered, _activated_by
    with _lock:
        load_kwargs.set_process_default(
            torch_load_kwargs, strict=strict, remap_devices=remap_devices
        )
        _wanted, _activated_by = True, _activated_by or activation
        if not _hook_registered:
            # wrapt can't unregister a hook: it stays, and does nothing unless wanted.
            wrapt.register_post_import_hook(_patch_skorch, "skorch.net")
            _hook_registered = True
        if "skorch.net" in sys.modules:
            _patch_skorch(sys.modules["skorch.net"])


def revert() -> None:
    """Remove exactly what ``apply()`` installed; safe to call twice or without it."""
    global _wanted, _activated_by, _translations
    with _lock:
        _wanted, _activated_by, _translations = False, None, ()
        load_kwargs.set_process_default(None)
        while _aliases:
            _aliases.pop().remove()
        while _layers:
            _layers.pop().remove()


def is_applied() -> bool:
    """Whether ``apply()`` is in force (skorch may not be imported yet)."""
    return _wanted


def _patch_skorch(net_module: types.ModuleType) -> None:
    from . import legacy
    from .sites import plan

    global _translations
    with _lock:
        if not _wanted or _layers:
            return
        for patch in plan(net_module, installed_version("skorch") or "unknown"):
            layer = _Layer(patch, patch.owner.__dict__.get(patch.attribute, _MISSING))
            layer.install()
            _layers.append(layer)
        aliases, _translations = legacy.install()
        _aliases.extend(aliases)


def status() -> Status:
    """What is installed, whether the patch is on, and each call site it patches."""
    with _lock:
        return Status(
            skorch_version=installed_version("skorch"),
            torch_version=installed_version("torch"),
            applied=_wanted,
            activated_by=_activated_by,
            strict=load_kwargs.is_strict(),
            sites=tuple(layer.patch.site for layer in _layers if layer.enabled),
            translations=_translations,
        )
