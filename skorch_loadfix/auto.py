"""``import skorch_loadfix.auto`` in a sitecustomize.py or usercustomize.py applies the patch.

Lazily, as ``SKORCH_LOADFIX=1`` does: the patch goes in when skorch is imported.
"""

from _skorch_loadfix_pth import activate_on_skorch_import

activate_on_skorch_import("import skorch_loadfix.auto")
