"""What ``skorch_loadfix.pth`` runs at every interpreter start: the standard library only.

``SKORCH_LOADFIX=1`` in the environment (inherited by every worker and subprocess)
arms a finder that waits for ``import skorch``; only then are skorch_loadfix and
wrapt imported and the patch applied. A process that never imports skorch pays
for one environment lookup and this small module, and never imports torch.
"""

import os
import sys

VARIABLE = "SKORCH_LOADFIX"
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


def _apply(activation: str) -> None:
    try:
        from skorch_loadfix.patching import activate

        activate(activation)
    except Exception as exc:  # never break the user's import of skorch
        sys.stderr.write(f"skorch-loadfix: could not apply the fix ({activation}): {exc!r}\n")


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
    elif value not in ("", "0"):
        sys.stderr.write(
            f"skorch-loadfix: ignoring {VARIABLE}={value!r}; "
            "set it to 1 to apply the fix in every process, or 0 to leave skorch alone\n"
        )
