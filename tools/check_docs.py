"""The docs check of ``nox -s lint``: links that resolve, tests cited that exist, a README
that stays short, and CI running the test command README gives.

Every relative link and anchor in the Markdown files resolves: a reader who follows one
lands where it says. Anchors are computed as GitHub renders headings. A safety claim cites
the test that holds it by name (`test_...`): that test must exist, so a renamed or
deleted test can't leave a claim without one. README's Python
blocks are run by tests/test_docs.py, which needs torch and skorch; this script needs
neither. Exit status 1 with one line per problem.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README_LIMIT = 12 * 1024
# README's second quickstart command; CI must run exactly it.
TEST_COMMAND = "python -m pip install nox && CI=true nox"

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_CODE = re.compile(r"`[^`\n]*`")
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.MULTILINE)
_CITED_TEST = re.compile(r"`(test_\w+)`")
_DEFINED_TEST = re.compile(r"^\s*def (test_\w+)\(", re.MULTILINE)


def markdown_files(root: Path) -> list[Path]:
    files = [root / name for name in ("README.md", "CHANGELOG.md", "CONTRIBUTING.md")]
    return [path for path in files if path.exists()] + sorted((root / "docs").glob("*.md"))


def prose(text: str) -> str:
    """The text a reader sees as prose: code blocks and comments hold no links."""
    return _COMMENT.sub("", _FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link shows its text
    text = text.lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading's anchor; GitHub suffixes repeats with -1, -2, ..."""
    seen: Counter[str] = Counter()
    found = set()
    for heading in _HEADING.findall(_FENCE.sub("", text)):
        base = slug(heading)
        found.add(f"{base}-{seen[base]}" if seen[base] else base)
        seen[base] += 1
    return found


def links(text: str) -> Iterator[str]:
    yield from _LINK.findall(_CODE.sub("", prose(text)))


def broken_links(path: Path) -> Iterator[str]:
    """One line per relative link or anchor in ``path`` that does not resolve."""
    for target in links(path.read_text(encoding="utf-8")):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: are not ours
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            yield f"{path.name}: link to {target}: {file_part} does not exist"
        elif anchor and anchor not in anchors(linked.read_text(encoding="utf-8")):
            yield f"{path.name}: link to {target}: no heading #{anchor} in {linked.name}"


def missing_tests(path: Path, root: Path) -> Iterator[str]:
    """One line per test ``path`` cites by name that no module in tests/ defines."""
    defined = {
        name
        for module in (root / "tests").glob("test_*.py")
        for name in _DEFINED_TEST.findall(module.read_text(encoding="utf-8"))
    }
    for name in sorted(set(_CITED_TEST.findall(path.read_text(encoding="utf-8"))) - defined):
        yield f"{path.name}: cites {name}, which no module in tests/ defines"


def problems(root: Path = ROOT) -> list[str]:
    found = [line for path in markdown_files(root) for line in broken_links(path)]
    found += [line for path in markdown_files(root) for line in missing_tests(path, root)]
    readme = root / "README.md"
    size = len(readme.read_bytes())
    if size > README_LIMIT:
        found.append(f"README.md: {size} bytes, over the {README_LIMIT} a five-minute read allows")
    if TEST_COMMAND not in readme.read_text(encoding="utf-8"):
        found.append(f"README.md: the quickstart no longer gives {TEST_COMMAND!r}")
    ci = root / ".ci" / "run"
    if ci.exists() and TEST_COMMAND not in ci.read_text(encoding="utf-8").splitlines():
        found.append(f".ci/run: does not run README's test command {TEST_COMMAND!r}")
    return found


def main() -> int:
    found = problems()
    for line in found:
        print(line, file=sys.stderr)
    if not found:
        print(f"docs check: {len(markdown_files(ROOT))} files, every link resolves")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
