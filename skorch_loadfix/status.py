"""What ``status()`` reports: versions, whether the patch is on, and where it acts."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .legacy import Translation


@dataclass(frozen=True)
class CallSite:
    """One patched place in skorch, and one line on what the patch does there."""

    name: str
    what: str

    def __str__(self) -> str:
        return f"{self.name}: {self.what}"


@dataclass(frozen=True)
class Status:
    skorch_version: str | None
    torch_version: str | None
    applied: bool
    activated_by: str | None
    strict: bool
    sites: tuple[CallSite, ...]
    translations: tuple[Translation, ...] = ()  # old names that old pickled nets load by

    def __str__(self) -> str:
        lines = [
            f"skorch {self.skorch_version or 'not installed'}, "
            f"torch {self.torch_version or 'not installed'}",
            f"skorch-loadfix: applied by {self.activated_by}{', strict' if self.strict else ''}"
            if self.applied
            else "skorch-loadfix: not applied",
        ]
        if self.applied and not self.sites:
            lines.append("  waiting for skorch.net to be imported")
        lines += [f"  {site}" for site in self.sites]
        if self.translations:
            lines.append("  old names, as pickled nets spell them:")
            lines += [f"    {translation}" for translation in self.translations]
        return "\n".join(lines)


def installed_version(distribution: str) -> str | None:
    """The installed version, read from metadata so nothing heavy is imported."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None
