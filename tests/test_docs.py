"""The documentation names only what exists: every ``tests/...py::test_name`` (and every path
under ``src/``, ``tests/``, ``bench/``, ``docs/`` or ``scripts/``) in ``docs/*.md`` and
``docs/decisions/*.md`` is a file of this repository, every ``::name`` after a Python file is
defined in it (``Class::method`` inside its class; a parametrised test's ``[id]`` is ignored),
and every relative Markdown link opens a file. A claim whose test was renamed or deleted fails
here, not in a reader's hands."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted([*(ROOT / "docs").glob("*.md"), *(ROOT / "docs" / "decisions").glob("*.md")])

# A path under one of these folders, not inside a longer path or URL, ending with a letter, digit,
# ``_`` or ``/`` (so that a full stop after it is not part of it); then, after a Python file, any
# number of ``::name`` with an optional ``[parameter id]``.
_PATH = re.compile(
    r"(?<![\w/.:-])(?P<path>(?:src|tests|bench|docs|scripts)/(?:[\w.-]+/)*[\w.-]*[\w/])"
    r"(?P<names>(?:::[A-Za-z_]\w*(?:\[[^\]\s`|]*\])?)*)"
)
_LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)


@dataclass(frozen=True)
class Reference:
    doc: str
    line: int
    path: str
    names: tuple[str, ...]

    def __str__(self) -> str:
        return "::".join((self.path, *self.names))


def references(text: str, doc: str) -> list[Reference]:
    """Every repository path in ``text`` with the names it qualifies, brackets removed."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        for match in _PATH.finditer(line):
            names = tuple(
                re.sub(r"\[.*\]$", "", name) for name in match["names"].split("::") if name
            )
            found.append(Reference(doc, number, match["path"], names))
    return found


def links(text: str) -> list[tuple[int, str]]:
    """Relative Markdown link targets (no URL scheme, not an anchor on the same page)."""
    return [
        (number, match["target"])
        for number, line in enumerate(text.splitlines(), start=1)
        for match in _LINK.finditer(line)
        if not _SCHEME.match(match["target"]) and not match["target"].startswith("#")
    ]


def _defined(body: list[ast.stmt], name: str) -> ast.stmt | None:
    """The top-level statement of ``body`` that defines ``name`` (a def, a class, or a plain
    assignment), if any."""
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if node.name == name:
                return node
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return node
    return None


def _outputs(root: Path) -> tuple[str, ...]:
    """Folders that programs write and the repository ignores (``/bench/results/``): named in
    the documentation as where output goes, they exist only once something ran."""
    lines = (root / ".gitignore").read_text(encoding="utf-8").splitlines()
    return tuple(line[1:] for line in lines if line.startswith("/") and line.endswith("/"))


def problem(reference: Reference, root: Path = ROOT) -> str | None:
    """What is wrong with ``reference``, or None when it names what exists."""
    if reference.path.startswith(_outputs(root)):
        return None
    target = root / reference.path
    if not target.exists():
        return f"{reference.path} does not exist"
    if not reference.names:
        return None
    if target.suffix != ".py" or not target.is_file():
        return f"{reference.path} is not a Python file, so it defines no {reference.names[0]}"
    body: list[ast.stmt] = ast.parse(target.read_text(encoding="utf-8")).body
    for depth, name in enumerate(reference.names):
        node = _defined(body, name)
        if node is None:
            where = "::".join((reference.path, *reference.names[:depth]))
            return f"{where} defines no {name}"
        body = node.body if isinstance(node, ast.ClassDef) else []
    return None


def _all_references() -> list[Reference]:
    return [
        reference
        for doc in DOCS
        for reference in references(
            doc.read_text(encoding="utf-8"), doc.relative_to(ROOT).as_posix()
        )
    ]


def _all_links() -> list[tuple[Path, int, str]]:
    return [
        (doc, number, target)
        for doc in DOCS
        for number, target in links(doc.read_text(encoding="utf-8"))
    ]


REFERENCES = _all_references()
LINKS = _all_links()


def test_the_security_document_cites_its_tests() -> None:
    cited = [r for r in REFERENCES if r.doc == "docs/security.md" and r.path.startswith("tests/")]
    assert len({str(r) for r in cited if r.names}) >= 50, "docs/security.md cites its tests"


@pytest.mark.parametrize("reference", REFERENCES, ids=lambda r: f"{r.doc}:{r.line}:{r}")
def test_each_reference_names_what_exists(reference: Reference) -> None:
    found = problem(reference)
    assert found is None, f"{reference.doc} line {reference.line}: {found}"


@pytest.mark.parametrize(
    ("doc", "line", "target"),
    LINKS,
    ids=[f"{doc.relative_to(ROOT).as_posix()}:{line}:{target}" for doc, line, target in LINKS],
)
def test_each_relative_link_opens_a_file(doc: Path, line: int, target: str) -> None:
    path = (doc.parent / target.split("#", 1)[0]).resolve()
    assert path.exists(), f"{doc.relative_to(ROOT)} line {line}: {target} does not exist"


class _Shelf:
    """Something for the checker's own test to point at."""

    def book(self) -> None: ...


def test_the_checker_tells_what_exists_from_what_is_gone() -> None:
    here = "tests/test_docs.py"
    text = "\n".join(
        [
            f"shown by `{here}::test_the_checker_tells_what_exists_from_what_is_gone[sqlite]`.",
            f"and `{here}::_Shelf::book`, `{here}::REFERENCES`, the folder src/sparekey/ too.",
            f"gone: `{here}::test_that_was_renamed`, `{here}::_Shelf::shelved`,",
            "`tests/api/test_nowhere.py::test_x`, `tests/test_docs.py::problem::inner`.",
            "a URL is not a path: https://example.com/tests/nowhere.py, nor ../src/nope.py.",
        ]
    )
    found = references(text, "example.md")
    assert [str(r) for r in found] == [
        f"{here}::test_the_checker_tells_what_exists_from_what_is_gone",
        f"{here}::_Shelf::book",
        f"{here}::REFERENCES",
        "src/sparekey/",
        f"{here}::test_that_was_renamed",
        f"{here}::_Shelf::shelved",
        "tests/api/test_nowhere.py::test_x",
        "tests/test_docs.py::problem::inner",
    ]
    assert [problem(r) for r in found] == [
        None,
        None,
        None,
        None,
        f"{here} defines no test_that_was_renamed",
        f"{here}::_Shelf defines no shelved",
        "tests/api/test_nowhere.py does not exist",
        f"{here}::problem defines no inner",
    ]
    outputs = references("runs go to bench/results/ (ignored), not to bench/nowhere/", "x.md")
    assert [problem(r) for r in outputs] == [None, "bench/nowhere/ does not exist"]
    assert links("[a](docs/x.md) [b](https://x.example/) [c](#here) [d](../y.md#top)") == [
        (1, "docs/x.md"),
        (1, "../y.md#top"),
    ]
