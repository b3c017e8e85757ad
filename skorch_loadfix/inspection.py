"""``python -m skorch_loadfix inspect``: a report on a pickled net from the static audit.

Nothing the file names is imported or run: the report comes from ``safe.verifier``, the
same reading ``load()`` and ``untrusted_globals()`` do first.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from .formats import BLOB
from .safe.effects import NetEffects, post_load_effects_of
from .safe.policy import policy
from .safe.verifier import BLOB_LEVEL, OUTER, TENSORS, ZIP_MAGIC, audit, audit_blob, is_torch_save


def blob_format(blob: bytes) -> str:
    if blob[:4] == ZIP_MAGIC:
        return "torch.save (zip)"
    return "torch.save (stream, torch < 1.6)" if is_torch_save(blob) else "pickle"


@dataclass(frozen=True)
class Report:
    net_class: str | None
    blob_format: str | None
    torch_load_kwargs: Any
    device: Any
    globals: dict[str, list[str]]
    refused_under_weights_only: list[str] = field(default_factory=list)
    needs_module_subclass: list[str] = field(default_factory=list)
    refused_by_load: dict[str, str] = field(default_factory=dict)
    effects: list[NetEffects] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [
            f"net: {self.net_class or 'no skorch net found'}",
            f"blob written by: {self.blob_format or '-'}",
            f"torch_load_kwargs stored in the file: {self.torch_load_kwargs!r}",
            f"device stored in the file: {self.device!r}",
        ]
        for level, names in self.globals.items():
            lines.append(f"globals in the {level}:")
            lines += [f"  {name}" for name in names] or ["  (none)"]
        lines.append(f"loads with weights_only=True: {self.verdict}")
        refusals = [f"  {name}: {why}" for name, why in self.refused_by_load.items()]
        lines.append(f"loads with skorch_loadfix.load(): {'no, it refuses' if refusals else 'yes'}")
        lines += refusals
        lines.append("what this net does when you use it (the file's choices; load() replaces")
        lines.append("only torch_load_kwargs):")
        lines += [f"  {line}" for net in self.effects for line in str(net).splitlines()]
        return "\n".join(lines if self.effects else [*lines, "  (no skorch net found)"])

    @property
    def verdict(self) -> str:
        if self.refused_under_weights_only:
            return "no, it refuses " + ", ".join(self.refused_under_weights_only)
        if self.needs_module_subclass:
            return (
                "yes, if these are torch.nn.Module, Optimizer or LRScheduler subclasses: "
                + ", ".join(self.needs_module_subclass)
            )
        return "yes"


def inspect_file(data: bytes) -> Report:
    """Report on the pickled bytes of a skorch net (or of anything holding one)."""
    where = "skorch_loadfix inspect"
    findings = audit(data, policy(), where)
    net = findings.nets[0] if findings.nets else None
    state = net.state if net is not None else {}
    blob = state.get(BLOB)
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
    return Report(
        net_class=net.entry.name if net is not None else None,
        blob_format=blob_format(bytes(blob)) if isinstance(blob, (bytes, memoryview)) else None,
        torch_load_kwargs=state.get("torch_load_kwargs"),
        device=state.get("device"),
        globals={level: sorted(findings.seen[level]) for level in (OUTER, BLOB_LEVEL, TENSORS)},
        refused_under_weights_only=[name for name in nested if name not in conditional],
        needs_module_subclass=conditional,
        refused_by_load=findings.refused,
        effects=post_load_effects_of(findings),
    )
