"""Every "authors-code §N.M" citation in the code and docs points at a heading of docs/authors-code.md."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "authors-code.md"

_NUMBER = r"\d+(?:\.\d+)*"
# "authors-code §1.9", "§1.9–1.10" (range, second § optional), "§1.9, §1.11" / "§1.11 and §1.13" (list, § required).
CITATION = re.compile(
    rf"authors-code\s+§\s*(?P<refs>{_NUMBER}(?:\s*(?:[–—-]\s*§?|(?:,|and|&|or)\s*§)\s*{_NUMBER})*)",
    re.IGNORECASE,
)
_PART = re.compile(rf"(?P<sep>[–—-]|,|and|&|or)?\s*§?\s*(?P<num>{_NUMBER})", re.IGNORECASE)
HEADING = re.compile(rf"^#{{2,6}}\s+(?P<num>{_NUMBER})\.?(?:\s|$)", re.MULTILINE)
# The form before docs/authors-code.md existed; written with \s+ so that a sed over the tree leaves it alone.
OLD_FORM = re.compile(r"\bfacts\s+§|shared/reference/authors-code[-]facts", re.IGNORECASE)


def _cited_files() -> list[Path]:
    files = [p for d in ("src", "benchmarks", "tests", "experiments") for p in sorted((ROOT / d).rglob("*.py"))]
    files += sorted((ROOT / "docs").rglob("*.md"))
    files += [p for p in (ROOT / "README.md", ROOT / "DESIGN.md") if p.is_file()]
    return [p for p in files if "__pycache__" not in p.parts]


def _expand(refs: str) -> list[str]:
    """``"1.9–1.11"`` -> 1.9, 1.10, 1.11; ``"1.9, §1.11"`` -> 1.9, 1.11."""
    out: list[str] = []
    for part in _PART.finditer(refs):
        num, sep = part["num"], part["sep"]
        if sep in ("–", "—", "-") and out:
            start, end = out[-1].split("."), num.split(".")
            if len(start) == len(end) and start[:-1] == end[:-1] and int(start[-1]) < int(end[-1]):
                prefix = ".".join([*start[:-1], ""])
                out += [f"{prefix}{i}" for i in range(int(start[-1]) + 1, int(end[-1]))]
        out.append(num)
    return out


def _citations() -> dict[str, list[str]]:
    """Cited section -> the places ("path:line") that cite it."""
    found: dict[str, list[str]] = {}
    for path in _cited_files():
        text = path.read_text(encoding="utf-8")
        for match in CITATION.finditer(text):
            where = f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, match.start()) + 1}"
            for section in _expand(match["refs"]):
                found.setdefault(section, []).append(where)
    return found


def test_expand_ranges_and_lists() -> None:
    assert _expand("1.9–1.11") == ["1.9", "1.10", "1.11"]
    assert _expand("1.9, §1.11") == ["1.9", "1.11"]
    assert _expand("1.11 and §1.13") == ["1.11", "1.13"]
    assert [m["refs"] for m in CITATION.finditer("(authors-code §1.9–1.10): a, authors-code §1.18).")] == [
        "1.9–1.10", "1.18"]


def test_every_cited_section_is_a_heading() -> None:
    headings = {m["num"] for m in HEADING.finditer(DOC.read_text(encoding="utf-8"))}
    missing = {s: places for s, places in _citations().items() if s not in headings}
    assert not missing, f"sections cited but not headings of {DOC.relative_to(ROOT)}: {missing}"


def test_no_file_cites_the_old_facts_document() -> None:
    offenders = []
    for path in _cited_files():
        text = path.read_text(encoding="utf-8")
        offenders += [f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, m.start()) + 1}"
                      for m in OLD_FORM.finditer(text)]
    assert not offenders, f"cite docs/authors-code.md as 'authors-code §N.M' instead: {offenders}"


XREF = re.compile(r":(?:mod|func|class|meth|data|attr|exc):`~?(?:[^`<]*<)?~?(?P<name>sdnet(?:\.\w+)+)>?`")


def _resolves(name: str) -> bool:
    parts = name.split(".")
    for k in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:k]))
        except ImportError:
            continue
        for attr in parts[k:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def test_docstring_cross_references_resolve() -> None:
    """Every ``:func:`sdnet....``` (and :mod:, :class:, :meth: ...) names a module or attribute that exists."""
    refs = [(f"{p.relative_to(ROOT)}:{t.count(chr(10), 0, m.start()) + 1}", m["name"])
            for p in sorted((ROOT / "src" / "sdnet").rglob("*.py")) for t in [p.read_text(encoding="utf-8")]
            for m in XREF.finditer(t)]
    assert len(refs) > 40  # the pattern sees the package's references
    assert not _resolves("sdnet.training.no_such_function")
    assert [f"{where}: {name}" for where, name in refs if not _resolves(name)] == []
