"""``python -m skorch_loadfix inspect``: a report on a pickled net from the static audit.

Nothing the file names is imported or run: the report comes from ``safe.verifier``, the
same reading ``load()`` and ``untrusted_globals()`` do first.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from .content import Content, explaining, readable
from .formats import BLOB
from .safe.effects import NetEffects, post_load_effects_of
from .safe.joblib_format import WRAPPER
from .safe.policy import canonical_name, policy
from .safe.verifier import (
    BLOB_LEVEL,
    OUTER,
    TENSORS,
    ZIP_MAGIC,
    Findings,
    audit,
    audit_blob,
    is_torch_save,
)


def blob_format(blob: bytes) -> str:
    if blob[:4] == ZIP_MAGIC:
        return "torch.save (zip)"
    return "torch.save (stream, torch < 1.6)" if is_torch_save(blob) else "pickle"


def container(content: Content, outer_globals: set[str]) -> str:
    """How the whole file was written, as a user would say it."""
    if content.kind == "compressed":
        return f"joblib.dump with compress={content.compression!r}"
    if content.torch_save:
        return f"{content.kind} of the whole object (not a state_dict)"
    return "joblib.dump (uncompressed)" if WRAPPER in outer_globals else "pickle"


@dataclass(frozen=True)
class Report:
    container: str
    net_class: str | None
    blob_format: str | None
    torch_load_kwargs: Any
    device: Any
    globals: dict[str, list[str]]
    refused_under_weights_only: list[str] = field(default_factory=list)
    needs_module_subclass: list[str] = field(default_factory=list)
    refused_by_load: dict[str, str] = field(default_factory=dict)
    effects: list[NetEffects] = field(default_factory=list)
    # What load() refuses in the outer pickle, which apply()'s callers read with pickle.load.
    run_by_pickle: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [
            f"file written by: {self.container}",
            f"net: {self.net_class or 'no skorch net found'}",
            f"blob written by: {self.blob_format or '-'}",
            f"torch_load_kwargs stored in the file: {self.torch_load_kwargs!r}",
            f"device stored in the file: {self.device!r}",
        ]
        for level, names in self.globals.items():
            lines.append(f"globals in the {level}:")
            lines += [f"  {_printable(name)}" for name in names] or ["  (none)"]
        how = "torch.load(weights_only=True)" if self.torch_save else "weights_only=True"
        lines.append(f"loads with {how}: {_printable(self.verdict)}")
        refusals = [
            f"  {_printable(f'{name}: {why}')}" for name, why in self.refused_by_load.items()
        ]
        lines.append(f"loads with skorch_loadfix.load(): {'no, it refuses' if refusals else 'yes'}")
        lines += refusals
        lines.append("what this net does when you use it (the file's choices; load() replaces")
        lines.append("only torch_load_kwargs):")
        effects = [line for net in self.effects for line in str(net).splitlines()]
        lines += [f"  {_printable(line)}" for line in effects]
        return "\n".join(lines if self.effects else [*lines, "  (no skorch net found)"])

    @property
    def torch_save(self) -> bool:
        return self.container.startswith("torch.save")

    @property
    def verdict(self) -> str:
        if self.run_by_pickle:
            names = ", ".join(self.run_by_pickle[:5])
            return (
                f"no: the outer pickle names {names}, which pickle.load runs whatever "
                "weights_only says; read it with skorch_loadfix.load()"
            )
        refused = self.refused_under_weights_only
        if refused:
            more = f" and {len(refused) - 5} more" if len(refused) > 5 else ""
            return "no, it refuses " + ", ".join(refused[:5]) + more
        if self.needs_module_subclass:
            return (
                "yes, if these are torch.nn.Module, Optimizer or LRScheduler subclasses: "
                + ", ".join(self.needs_module_subclass)
            )
        return "yes"


def inspect_file(data: bytes, allow: tuple[str, ...] = ()) -> Report:
    """Report on the pickled bytes of a skorch net (or of anything holding one)."""
    where = "skorch_loadfix inspect"
    content = readable(data)
    with explaining(data):
        findings = audit(data, policy(allow), where)
    if content.torch_save:  # torch.load reads the whole file: its outer pickle first
        refused = _refused_by_torch(findings.seen[OUTER])
        nets = {net.entry.name for net in findings.nets}
        return _report(content, findings, sorted(refused, key=lambda n: n not in nets), [])
    blob = _net_state(findings).get(BLOB)
    # What apply() with weights_only=True reads restricted: a torch.save blob and tensor
    # streams; a pickle blob is read by pickle, as skorch 1.2-1.4 do.
    nested = audit_blob(blob, policy(imported_components=True), where).refused if blob else {}
    if isinstance(blob, (bytes, memoryview)) and not is_torch_save(blob):
        nested = {name: why for name, why in nested.items() if why.endswith(f"(in the {TENSORS})")}
    # This reading imports nothing from the file, so a net's own module classes are
    # judged by whether their module is imported here: if not, they are a condition.
    conditional = [
        name
        for name, why in nested.items()
        if why.startswith("not allowed") and name.rpartition(".")[0] not in sys.modules
    ]
    refused = [name for name in nested if name not in conditional]
    return _report(content, findings, refused, conditional)


def _report(
    content: Content, findings: Findings, refused: list[str], conditional: list[str]
) -> Report:
    state = _net_state(findings)
    blob = state.get(BLOB)
    return Report(
        container=container(content, findings.seen[OUTER]),
        net_class=findings.nets[0].entry.name if findings.nets else None,
        blob_format=blob_format(bytes(blob)) if isinstance(blob, (bytes, memoryview)) else None,
        torch_load_kwargs=state.get("torch_load_kwargs"),
        device=state.get("device"),
        globals={level: sorted(findings.seen[level]) for level in (OUTER, BLOB_LEVEL, TENSORS)},
        refused_under_weights_only=refused,
        needs_module_subclass=conditional,
        refused_by_load=findings.refused,
        effects=post_load_effects_of(findings),
        run_by_pickle=[] if content.torch_save else _outer_refusals(findings),
    )


def _outer_refusals(findings: Findings) -> list[str]:
    """What the outer pickle names on the hard blocklist: pickle.load runs it (a class the
    caller has not allowed yet, say their own module, is no such verdict)."""
    outer = f"(in the {OUTER})"
    return [n for n, why in findings.refused.items() if why.startswith("blocked") and outer in why]


def _printable(text: str) -> str:
    """``text`` with what a terminal would act on escaped: a file's names may hold newlines
    and escape sequences that would redraw the report around them."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def _net_state(findings: Findings) -> Any:
    return findings.nets[0].state if findings.nets else {}


def _refused_by_torch(names: set[str]) -> list[str]:
    """What ``torch.load(weights_only=True)`` refuses among ``names``: its own allowlist
    (torch's private table, where this torch has it) and the user's safe globals."""
    import torch
    from torch import _weights_only_unpickler

    allowed = set(getattr(_weights_only_unpickler, "_get_allowed_globals", dict)())
    getter = getattr(torch.serialization, "get_safe_globals", list)  # torch >= 2.4
    allowed |= {canonical_name(g[0] if isinstance(g, tuple) else g) for g in getter()}
    return sorted(name for name in names if name not in allowed)
