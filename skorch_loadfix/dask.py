"""``client.register_plugin(SkorchLoadfix())``: the patch in every Dask worker, now and later.

Workers a scheduler starts on other machines inherit none of the client's environment,
so ``SKORCH_LOADFIX=1`` reaches them only if whoever starts them sets it. A worker
plugin travels with the client instead: the scheduler hands it to every worker that
exists or joins. Needs ``distributed`` (``pip install skorch-loadfix[dask]``).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from distributed import WorkerPlugin

from . import load_kwargs, patching

ACTIVATION = "dask worker plugin"
_lock = threading.Lock()
# Workers of a LocalCluster(processes=False) share one process and so one patch: it is
# put back as it was only when the last of them lets go.
_holders = 0
_before: tuple[bool, dict[str, Any] | None, bool] = (False, None, False)


class SkorchLoadfix(WorkerPlugin):
    """``apply(torch_load_kwargs=..., strict=...)`` in each worker; teardown puts it back.

    The fixed ``name`` makes a second registration replace the first (Dask tears the
    old one down, then sets the new one up), so registering twice is harmless and the
    latest options win. Teardown restores what the worker had before, so a worker that
    also runs with ``SKORCH_LOADFIX=1`` keeps its patch.
    """

    name = "skorch-loadfix"

    def __init__(
        self, torch_load_kwargs: Mapping[str, Any] | None = None, strict: bool = False
    ) -> None:
        # Checked here, in the client, so a mistake fails at registration, not in each worker.
        self.torch_load_kwargs = (
            None
            if torch_load_kwargs is None
            else load_kwargs.checked(torch_load_kwargs, "skorch_loadfix.dask.SkorchLoadfix()")
        )
        if not isinstance(strict, bool):
            raise TypeError(
                f"skorch_loadfix.dask.SkorchLoadfix(): strict must be True or False, not {strict!r}"
            )
        self.strict = strict

    def setup(self, worker: Any) -> None:
        global _holders, _before
        with _lock:
            if _holders == 0:
                _before = (
                    patching.is_applied(),
                    load_kwargs.process_default(),
                    load_kwargs.is_strict(),
                )
            _holders += 1
            patching.activate(ACTIVATION, self.torch_load_kwargs, strict=self.strict)

    def teardown(self, worker: Any) -> None:
        global _holders
        with _lock:
            _holders -= 1
            if _holders:
                return
            applied, kwargs, strict = _before
            if applied:
                load_kwargs.set_process_default(kwargs, strict=strict)
            else:
                patching.revert()
