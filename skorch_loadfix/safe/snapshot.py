"""A deep copy of the plain containers in what a pickle hands to BUILD or to a call.

A pickle can keep a container in its memo and fill it again later (SETITEM, APPEND,
ADDITEMS after a GET): after the rules checked it, and after an object kept it
(``functools.partial`` keeps the ``kwds`` and ``__dict__`` it is given as they are). A
copy made before the check is the only one that is checked and kept; the memo still holds
the original, so nothing later in the stream reaches what was checked.

Only containers of exactly the types pickle's own opcodes build (``dict``, ``list``,
``tuple``, ``set``, ``frozenset``) are copied, and a tuple or frozenset only where it holds
a mutable one; anything else, and anything a call made
(an ``OrderedDict``, a tensor, an instance), stays the object it is, so identity checks
(what a call of this load created, what ``find_class`` returned) see the same objects.
"""

from __future__ import annotations

from typing import Any

_MUTABLE = (dict, list, set)
_IMMUTABLE = (tuple, frozenset)


def snapshot(obj: Any) -> Any:
    """``obj`` with every plain container reachable through plain containers copied.

    Shared containers stay shared and cycles stay cycles (memoized by identity); each
    container is visited once, without recursion: linear in the containers and their
    items, however deep they nest.
    """
    if type(obj) not in (*_MUTABLE, *_IMMUTABLE):
        return obj
    found = _containers(obj)
    copies: dict[int, Any] = {id(c): type(c)() for c in found if type(c) in _MUTABLE}
    for container in _children_first(found):  # tuples, frozensets: their items first
        items = [_copied(item, copies) for item in container]
        same = all(new is old for new, old in zip(items, container, strict=True))
        # Nothing mutable below: no copy, so that what the unpickler knows of it (its height,
        # for hashing) still holds.
        copies[id(container)] = container if same else type(container)(items)
    for container in found:
        copy = copies[id(container)]
        if type(container) is dict:
            copy.update((_copied(k, copies), _copied(v, copies)) for k, v in container.items())
        elif type(container) is list:
            copy.extend(_copied(item, copies) for item in container)
        elif type(container) is set:
            copy.update(_copied(item, copies) for item in container)
    return copies[id(obj)]


def _items(container: Any) -> list[Any]:
    if type(container) is dict:
        return [*container.keys(), *container.values()]
    return list(container)


def _plain_container(obj: Any) -> bool:
    return type(obj) in (*_MUTABLE, *_IMMUTABLE)


def _containers(root: Any) -> list[Any]:
    """Every plain container reachable from ``root`` through plain containers, once."""
    seen = {id(root)}
    found, todo = [root], [root]
    while todo:
        for item in _items(todo.pop()):
            if _plain_container(item) and id(item) not in seen:
                seen.add(id(item))
                found.append(item)
                todo.append(item)
    return found


def _children_first(found: list[Any]) -> list[Any]:
    """The tuples and frozensets of ``found``, each after the immutable ones it holds.

    Immutable containers hold only what existed when they were made, so they form no
    cycle among themselves; a cycle passes through a list, dict or set, whose copy exists
    (empty) before any tuple is made and is filled last.
    """
    done: set[int] = set()
    order: list[Any] = []
    for root in found:
        if type(root) not in _IMMUTABLE or id(root) in done:
            continue
        stack = [(root, False)]
        while stack:
            container, expanded = stack.pop()
            if id(container) in done:
                continue
            if expanded:
                done.add(id(container))
                order.append(container)
                continue
            stack.append((container, True))
            stack += [
                (item, False)
                for item in container
                if type(item) in _IMMUTABLE and id(item) not in done
            ]
    return order


def _copied(item: Any, copies: dict[int, Any]) -> Any:
    return copies[id(item)] if _plain_container(item) else item
