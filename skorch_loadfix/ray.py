"""``ray.init(runtime_env=skorch_loadfix.ray.runtime_env())``: the patch in every Ray worker.

Ray starts its workers itself, on every node, with the environment the runtime env
gives them: ``SKORCH_LOADFIX=1`` there arms the ``.pth`` as in any other process.
Building the dict needs no Ray, so this module never imports it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from _skorch_loadfix_pth import OPTIONS_VARIABLE, VARIABLE

from . import load_kwargs


def runtime_env(
    base: Mapping[str, Any] | None = None,
    *,
    torch_load_kwargs: Mapping[str, Any] | None = None,
    strict: bool = False,
) -> dict[str, Any]:
    """``base`` (a runtime env you already use) with the variables that apply the patch.

    ``torch_load_kwargs`` and ``strict`` mean what they mean for ``apply()`` and travel
    as JSON in ``SKORCH_LOADFIX_KWARGS``. Your other ``env_vars`` are kept; one of ours
    already set to something else is a ``ValueError`` rather than a silent overwrite.
    """
    where = "skorch_loadfix.ray.runtime_env()"
    if not isinstance(strict, bool):
        raise TypeError(f"{where}: strict must be True or False, not {strict!r}")
    ours = {VARIABLE: "1"}
    if torch_load_kwargs is not None or strict:
        options: dict[str, Any] = {"strict": strict}
        if torch_load_kwargs is not None:
            options["torch_load_kwargs"] = load_kwargs.checked(torch_load_kwargs, where)
        try:
            ours[OPTIONS_VARIABLE] = json.dumps(options, sort_keys=True)
        except TypeError as exc:
            raise TypeError(
                f"{where}: torch_load_kwargs must be plain JSON values (bools, numbers, "
                f"strings) to reach the workers through {OPTIONS_VARIABLE}: {exc}"
            ) from None
    merged = dict(base or {})
    env_vars = dict(merged.get("env_vars") or {})
    for name, value in ours.items():
        if env_vars.get(name, value) != value:
            raise ValueError(
                f"{where}: the runtime env already sets {name}={env_vars[name]!r}, which "
                f"conflicts with {value!r}; remove it from env_vars or pass the options here"
            )
    merged["env_vars"] = {**env_vars, **ours}
    return merged
