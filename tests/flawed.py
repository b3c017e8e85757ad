"""A function a caller allows, with a flaw the policy can't see: it runs ``gadget``."""

from collections.abc import Callable

gadget: Callable[[], object] = lambda: None  # noqa: E731 (set by the test)


def convert(value: object) -> object:
    gadget()
    return value
