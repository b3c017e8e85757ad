"""What ``skorch_loadfix.pth`` runs at every interpreter start: the standard library only.

``SKORCH_LOADFIX=1`` in the environment (inherited by every worker and subprocess)
arms a finder that waits for ``import skorch``; only then are skorch_loadfix and
wrapt imported and the patch applied. A process that never imports skorch pays
for one scan of the environment's names and, when one starts with ``SKORCH_LOADFIX``,
this small module; it never imports torch.

Python >= 3.15 (PEP 829) calls ``from_environment`` through ``skorch_loadfix.start``
and skips the .pth's import line, which later Pythons ignore.
"""

import os
import sys

VARIABLE = "SKORCH_LOADFIX"
# apply()'s keyword arguments as JSON: the one way to pass them to workers that a cluster
# manager (Ray, Spark) starts, which get an environment and nothing else of the user's.
OPTIONS_VARIABLE = "SKORCH_LOADFIX_KWARGS"
OPTIONS_EXAMPLE = '{"torch_load_kwargs": {"weights_only": true}, "strict": false}'
_read = False


class _SkorchWatcher:
    """A meta-path finder that finds nothing: it applies the patch as skorch is imported."""

    def __init__(self, activation: str) -> None:
        self.activation = activation
        self.armed = True

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "skorch" and self.armed:
            # Disarmed, not removed: importlib is iterating over sys.meta_path right now.
            self.armed = False
            _apply(self.activation)


def options_from_environment() -> tuple[dict[str, object] | None, bool, bool]:
    """``SKORCH_LOADFIX_KWARGS``, checked: apply()'s ``torch_load_kwargs``, ``strict`` and
    ``remap_devices``."""
    text = os.environ.get(OPTIONS_VARIABLE, "")
    if not text:
        return None, False, True
    import json

    try:
        options = json.loads(text)
    except ValueError as exc:
        raise ValueError(
            f"{OPTIONS_VARIABLE} is not valid JSON ({exc}); set it to an object such as "
            f"{OPTIONS_EXAMPLE}"
        ) from None
    kwargs = options.get("torch_load_kwargs") if isinstance(options, dict) else None
    strict = options.get("strict", False) if isinstance(options, dict) else None
    remap = options.get("remap_devices", True) if isinstance(options, dict) else None
    if (
        not isinstance(options, dict)
        or not set(options) <= {"torch_load_kwargs", "strict", "remap_devices"}
        or not isinstance(kwargs, (dict, type(None)))
        or not isinstance(strict, bool)
        or not isinstance(remap, bool)
    ):
        raise ValueError(
            f"{OPTIONS_VARIABLE} must be a JSON object with apply()'s keyword arguments, "
            f"'torch_load_kwargs' (an object), 'strict' and 'remap_devices' (true or false), "
            f"such as {OPTIONS_EXAMPLE}; got {text!r}"
        )
    return kwargs, strict, remap


def _apply(activation: str) -> None:
    try:
        from skorch_loadfix.patching import activate

        kwargs, strict, remap = options_from_environment()
        activate(activation, kwargs, strict=strict, remap_devices=remap)
    except Exception as exc:  # never break the user's import of skorch
        sys.stderr.write(
            f"skorch-loadfix: could not apply the fix ({activation}): {type(exc).__name__}: {exc}\n"
        )


def activate_on_skorch_import(activation: str) -> None:
    """Apply the patch when skorch is imported, or now if it already is."""
    if "skorch" in sys.modules:
        _apply(activation)
    else:
        sys.meta_path.insert(0, _SkorchWatcher(activation))


def from_environment() -> None:
    """Read ``SKORCH_LOADFIX``: "1" activates, "0" or empty leaves skorch alone.

    Once per process: some interpreters process site-packages, and so the .pth, twice.
    """
    global _read
    if _read:
        return
    _read = True
    value = os.environ.get(VARIABLE, "")
    if value == "1":
        activate_on_skorch_import(f"{VARIABLE}=1")
    elif value == "" and os.environ.get(OPTIONS_VARIABLE):
        sys.stderr.write(
            f"skorch-loadfix: ignoring {OPTIONS_VARIABLE}: it only takes effect with "
            f"{VARIABLE}=1, which is not set\n"
        )
    elif value not in ("", "0"):
        sys.stderr.write(
            f"skorch-loadfix: ignoring {VARIABLE}={value!r}; "
            "set it to 1 to apply the fix in every process, or 0 to leave skorch alone\n"
        )
