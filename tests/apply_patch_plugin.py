"""``pytest -p apply_patch_plugin``: run a test suite (skorch's own) with the patch applied."""

import skorch_loadfix


def pytest_configure(config):
    skorch_loadfix.apply()
