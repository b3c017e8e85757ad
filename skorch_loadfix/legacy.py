"""Nets pickled by old skorch and torch releases: names that are gone, and old state.

Two halves. ``TRANSLATIONS`` maps each global an old pickled net names, and that
skorch 1.4.0 or torch no longer has, to its successor or to a harmless stand-in;
``install()`` makes the old names resolve while the patch is applied, and
``Policy`` (``load()``, ``weights_only=True``) reads the same table. And
``upgrade_state()`` and ``upgrade_merged_state()`` turn the state an old release
pickled into what the installed release expects, before and after its blob is merged.

How the table was made: the top-level classes and functions of every skorch
release from 0.5.0 to 1.4.0 (read from their wheels), less those 1.4.0 still has.
Of what is gone, only names a net's pickled state can hold are translated;
the others are functions skorch calls and never stores (``uses_placeholder_y``,
``cache_net_infer``, ``_infer_predict_nonlinearty``, ``get_default_torch_load_kwargs``,
``history._filter_none``/``_getitem``, ``callbacks.base._on_batch_overridden``,
``filtered_optimizer`` itself, which returns the partial below), constants
(``_PYTORCH_COMPONENTS``, ``GPYTORCH_INSTALLED``, ``neural_net_clf_criterion_text``),
and copies that 0.12.1-1.0.0 wheels shipped by accident (``skorch.flycheck_*``: a net
names a class by its ``__module__``, which is never one of those). torch keeps
every other global that torch >= 1.0 pickled into a net (rebuild functions, storage
classes, ``Container``, ``Variable``, ``_LRScheduler``).
"""

from __future__ import annotations

import importlib
import inspect
import sys
import types
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .formats import BLOB

# old "module.qualname" -> new "module.qualname"; every old name is top-level in its module.
TRANSLATIONS: Mapping[str, str] = types.MappingProxyType(
    {
        # skorch 0.5.0-0.12.1; renamed ValidSplit in 0.12.0, the old name gone in 0.13.0.
        # Same constructor and attributes (cv, stratified, random_state).
        "skorch.dataset.CVSplit": "skorch.dataset.ValidSplit",
        # torch <= 1.x pickled each module's `_backend` as a call of this. torch 2.13
        # still ships it (returning None), but a weights-only load refuses it, and
        # nothing promises it stays: the stand-in returns the same None.
        "torch.nn.backends.thnn._get_thnn_function_backend": "skorch_loadfix.stand_ins.no_backend",
        # skorch 0.5.0's filtered_optimizer(SGD, filter_requires_grad) pickled as the net's
        # optimizer: partial(skorch.utils._make_optimizer, optimizer=SGD, filter_fn=...).
        # Gone in 0.6.0 (filter_requires_grad) and 0.7.0 (_make_optimizer).
        "skorch.utils._make_optimizer": "skorch_loadfix.stand_ins.make_filtered_optimizer",
        "skorch.helper.filter_requires_grad": "skorch_loadfix.stand_ins.filter_requires_grad",
    }
)

# skorch 0.5.0 kept the blob under the name of its list of blob attributes.
OLD_BLOB = "cuda_dependent_attributes_"
# A development version of July 2022 (between 0.11 and 0.12) kept beside the blob the
# prefixes of the attributes it moved there, to put back into ``_kwargs`` those that were
# parameters; its own ``__setstate__`` consumed the key. See ``upgrade_merged_state``.
PREFIXES = "__cuda_dependent_attributes_prefixes__"


def translated(module: str, name: str) -> tuple[str, str]:
    """What ``module.name`` names today: its successor if the table has one, else itself."""
    new = TRANSLATIONS.get(f"{module}.{name}")
    if new is None:
        return module, name
    new_module, _, new_name = new.rpartition(".")
    return new_module, new_name


@dataclass(frozen=True)
class Translation:
    """One table entry as this process has it, for ``status()``."""

    old: str
    new: str
    how: str

    def __str__(self) -> str:
        return f"{self.old} -> {self.new} ({self.how})"


@dataclass(eq=False)
class Alias:
    """One thing ``install()`` added: ``owner.attribute = value``, where nothing was.

    A stand-in module is also entered in ``sys.modules`` (``module`` set), since
    ``pickle`` imports a global's module by name before it reads the attribute.
    """

    owner: types.ModuleType | None  # None for a top-level stand-in module
    attribute: str
    value: Any
    module: str | None = None

    def remove(self) -> None:
        """Undo it, unless someone replaced it since: then theirs stays."""
        if self.owner is not None and vars(self.owner).get(self.attribute) is self.value:
            delattr(self.owner, self.attribute)
        if self.module is not None and sys.modules.get(self.module) is self.value:
            del sys.modules[self.module]


def install() -> tuple[list[Alias], tuple[Translation, ...]]:
    """Make every old name in the table resolve to its successor, where it is missing.

    ``pickle.load`` (the C unpickler) resolves a global with ``__import__(module)``
    and ``getattr`` on ``sys.modules[module]``, and offers no hook to anyone but the
    ``Unpickler`` that the caller chose; so the old names are put where it looks:
    an attribute on the old module, or a stand-in module in ``sys.modules`` where
    the module itself is gone. Names a release still has are left alone (skorch
    0.12.1 has its own ``CVSplit``). ``revert()`` removes the ``Alias``es, last first.
    """
    aliases: list[Alias] = []
    translations = []
    for old, new in TRANSLATIONS.items():
        module_name, _, attribute = old.rpartition(".")
        owner = _module_or_stand_in(module_name, aliases)
        if attribute in vars(owner):
            how = "present in this install; load() and weights_only loads translate it"
        else:
            alias = Alias(owner, attribute, _resolve(new))
            setattr(owner, attribute, alias.value)
            aliases.append(alias)
            how = "alias added"
        translations.append(Translation(old, new, how))
    return aliases, tuple(translations)


def _resolve(name: str) -> Any:
    module, _, attribute = name.rpartition(".")
    return getattr(importlib.import_module(module), attribute)


def _module_or_stand_in(name: str, aliases: list[Alias]) -> types.ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError:
        pass
    parent_name, _, last = name.rpartition(".")
    parent = _module_or_stand_in(parent_name, aliases) if parent_name else None
    stand_in = types.ModuleType(name, "skorch-loadfix: stands in for a module that is gone")
    sys.modules[name] = stand_in
    if parent is not None and last not in vars(parent):
        setattr(parent, last, stand_in)
    aliases.append(Alias(parent, last, stand_in, module=name))
    return stand_in


def upgrade_state(net: Any, state: dict[str, Any]) -> None:
    """Turn what an old skorch pickled into the state the installed release expects.

    In place, before the blob is read. What each step undoes is named in it.
    """
    if BLOB not in state and isinstance(state.get(OLD_BLOB), bytes):
        state[BLOB] = state.pop(OLD_BLOB)  # skorch 0.5.0
    if "history" in state and "history_" not in state:
        state["history_"] = state.pop("history")  # skorch <= 0.6: a property since
    _params_to_validate(state)
    if state.get("initialized_"):
        _component_lists(type(net), state)
    for name, default in init_defaults(type(net)).items():
        state.setdefault(name, default)  # parameters added since the file was written
    for obj in _skorch_objects(state):
        for name, default in init_defaults(type(obj)).items():
            vars(obj).setdefault(name, default)


# Every load of a net asks, and signatures are slow to read; classes may be made and dropped.
_defaults: weakref.WeakKeyDictionary[type, dict[str, Any]] = weakref.WeakKeyDictionary()


def init_defaults(cls: type) -> dict[str, Any]:
    """Each parameter with a default of the ``__init__``s ``cls`` runs, with that default.

    Every class of the MRO that defines one: ``NeuralNetClassifier.__init__`` takes
    most of ``NeuralNet``'s parameters as ``**kwargs``. A subclass's default wins.
    """
    if cls not in _defaults:
        _defaults[cls] = _read_defaults(cls)
    return _defaults[cls]


def _read_defaults(cls: type) -> dict[str, Any]:
    defaults: dict[str, Any] = {}
    for owner in reversed(cls.__mro__):
        init = vars(owner).get("__init__")
        if not inspect.isfunction(init):  # object's, or a builtin's: nothing to fill in
            continue
        for name, p in inspect.signature(init).parameters.items():
            if p.default is not p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                defaults[name] = p.default
    return defaults


def optimizer_setstate(
    wrapped: Any, optimizer: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``Optimizer.__setstate__``, first filling in what torch 1.0 did not pickle."""
    upgrade_optimizer_state(optimizer, args[0])
    return wrapped(*args, **kwargs)


def upgrade_optimizer_state(optimizer: Any, state: Any) -> None:
    """Give an optimizer that torch 1.0 pickled without ``defaults`` the ones it was built with.

    Today's ``__setstate__`` reads ``self.defaults`` and fails on them. The
    constructor's defaults, overridden by what the first parameter group holds, are
    what the optimizer was built with; a state that has ``defaults`` is left alone.
    """
    if isinstance(state, dict) and "defaults" not in state and state.get("param_groups"):
        first = {k: v for k, v in state["param_groups"][0].items() if k != "params"}
        state["defaults"] = {**init_defaults(type(optimizer)), **first}


def _params_to_validate(state: dict[str, Any]) -> None:
    """skorch >= 0.12 keeps the names of ``__`` parameters to check in ``_params_to_validate``.

    skorch 0.11 kept them with their values in ``_kwargs`` (0.12 translated it in its
    own ``__setstate__``, 1.0 stopped); earlier releases only set the attributes.
    """
    if "_kwargs" in state:
        if "_params_to_validate" in state:
            raise ValueError(
                "the pickled net has both skorch 0.11's _kwargs and skorch >= 0.12's "
                "_params_to_validate, which no skorch release writes: the file was edited "
                "or is damaged; remove one of them from its state, or re-create the net"
            )
        kwargs = state.pop("_kwargs")
        if type(kwargs) is not dict:  # its items are read: a dict's own, nothing the file chose
            raise ValueError(
                f"the pickled net's skorch 0.11 _kwargs is a {type(kwargs).__name__}, which "
                "no skorch release writes (a dict): the file was edited or is damaged; "
                "re-create the net"
            )
        for name, value in kwargs.items():
            state.setdefault(name, value)
        state["_params_to_validate"] = set(kwargs)
    elif "_params_to_validate" not in state:
        # The blob may hold some (skorch 0.6-0.10 put `criterion__*` there): set_params
        # adds each again when it is set, so only initialize() checks fewer names.
        state["_params_to_validate"] = {
            name for name in state if "__" in name and not name.startswith("_")
        }


def upgrade_merged_state(state: dict[str, Any]) -> None:
    """The upgrades that need the blob's attributes: after it is merged into ``state``.

    The July 2022 development version moved the values of ``__`` parameters whose name
    starts with a prefix in ``PREFIXES`` (``module__hidden_units``) from ``_kwargs`` into
    the blob, and named them again once it was read. ``_kwargs`` is
    ``_params_to_validate`` by now (``upgrade_state``): they go there.
    """
    if PREFIXES not in state:
        return
    prefixes = state.pop(PREFIXES)
    if type(prefixes) is not list or not all(type(prefix) is str for prefix in prefixes):
        raise ValueError(
            f"the pickled net's {PREFIXES} is not the list of names skorch wrote: the file "
            "was edited or is damaged; remove it from its state, or re-create the net"
        )
    names = state.get("_params_to_validate")
    if type(names) is set:
        names |= {
            key
            for key in state
            if type(key) is str  # the blob's keys are checked after this
            and key.startswith(tuple(prefixes))
            and "__" in key
            and not key.startswith("_")
        }


def _component_lists(cls: type, state: dict[str, Any]) -> None:
    """skorch < 0.11 had one module, criterion and optimizer, and registered none of them.

    Later releases list them (``_modules``...), and only listed ones are switched
    to eval mode for ``predict``, saved by ``save_params`` and written to the blob.
    """
    names = {"_modules": "module", "_criteria": "criterion", "_optimizers": "optimizer"}
    for attribute, name in names.items():
        state.setdefault(attribute, [name])
    registered = [name for attribute in names for name in state.get(attribute, [])]
    if "prefixes_" not in state:
        state["prefixes_"] = [*getattr(cls, "prefixes_", []), *registered]
    if not isinstance(state.get("cuda_dependent_attributes_"), list):
        state["cuda_dependent_attributes_"] = [f"{name}_" for name in registered]


def _skorch_objects(state: dict[str, Any]) -> list[Any]:
    """The callbacks and the split a net holds: skorch objects that gained parameters too."""
    found = [state.get("train_split")]
    for key in ("callbacks", "callbacks_"):
        for item in state.get(key) or ():
            found.append(item[1] if isinstance(item, tuple) else item)
    return [
        obj
        for obj in found
        if type(obj).__module__.startswith("skorch.") and hasattr(obj, "__dict__")
    ]
