"""The documentation's links resolve, and the repository points nowhere outside itself."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    headings = re.findall(r"^#+ +(.+?) *$", text, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_slugs_follow_github():
    page = ROOT / "docs" / "results" / "markov.md"
    assert "mu-miss-premise-input-sensitivity-of-seen-and-unseen-data" in anchors(page)
    assert "iaus-step-size" in anchors(page)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in LINK.findall(re.sub(r"```.*?```", "", page.read_text(), flags=re.S)):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        missing_anchor = anchor and resolved.suffix == ".md" and anchor not in anchors(resolved)
        if not resolved.exists() or missing_anchor:
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: {broken}"


def test_nothing_points_outside_the_repository():
    files = [
        path
        for folder in ("hf_unlearn", "docs", "benchmarks", "recipes", "examples", "tests")
        for path in (ROOT / folder).rglob("*")
        if path.suffix in {".py", ".md", ".yaml", ".toml"} and path.name != "test_docs.py"
    ] + [ROOT / "README.md", ROOT / "pyproject.toml"]
    forbidden = re.compile(r"\.\./shared|SPEC §|\bissues? #?\d+|github\.com")
    hits = [f"{path.relative_to(ROOT)}: {m.group(0)}" for path in files for m in forbidden.finditer(path.read_text())]
    assert not hits
