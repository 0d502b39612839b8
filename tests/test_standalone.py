"""The repository stands alone: no pointer to files outside it, and every pointer to its own
documentation resolves.

- No text file of the project carries a section sign or a path into the team's shared folder
  or its private specs: the facts a reader needs are in the docstrings or in ``docs/``.
- Every ``<name>.md`` a text file mentions exists: relative to the repository root, to the
  mentioning file, or to ``docs/`` (the README's layout lists that folder's pages by name);
  paths inside the packaged plugin (``cloudrm_plugin/…``) are checked without that prefix; the
  files the engine itself writes (``report.md``) are exempt.
- Every "docs/<page>.md, 'Section'" reference names a heading of that page (a heading may add a
  parenthesised citation: "SEN12MS-CR" names "SEN12MS-CR (Ebel et al., 2021)").
- Every model card's ``docs:`` page exists.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from cloudrm_engine.models import list_models, model_card
from tests.conftest import REPO

SCANNED = ("engine", "cloudrm_plugin", "resources", "scripts", "docs", "tests", ".ci")
SCANNED_FILES = ("README.md", "pyproject.toml", "metadata.txt")
SKIP_DIRS = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis"}

# Built from pieces so that this file does not match its own patterns.
SECTION_SIGN = "\u00a7"
OUTSIDE = ("../" + "shared", "shared" + "/specs")
FORBIDDEN = (SECTION_SIGN, *OUTSIDE)

GENERATED_MD = {"report.md"}
"""Markdown files the engine writes (``cloudrm evaluate``), named in code and docs."""

MD_REF = re.compile(r"(?<![\w/.<>*-])([\w./-]*[\w-]\.md)\b")
DOC_SECTION = re.compile(r"(docs/[\w/.-]+\.md),[\s#]*[\"']([^\"'\n]+)[\"']")
LINK_SECTION = re.compile(r"\]\(([\w/.-]+\.md)\),[\s#]*\"([^\"\n]+)\"")

PENDING: dict[str, str] = {}
"""Files known to still break the rule, with the reason. Each entry must still be needed (a
test checks it), so fixing the file means deleting its entry here."""


def _text_files() -> list[Path]:
    files = [REPO / f for f in SCANNED_FILES if (REPO / f).is_file()]
    for top in SCANNED:
        root = REPO / top
        if not root.is_dir():
            continue
        for p in sorted(root.rglob("*")):
            if p.is_file() and not SKIP_DIRS.intersection(p.relative_to(REPO).parts):
                files.append(p)
    out = []
    for p in files:
        data = p.read_bytes()
        if b"\0" in data[:8192]:
            continue  # binary: GeoTIFFs, checkpoints
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        out.append(p)
    return out


FILES = _text_files()


def _rel(p: Path) -> str:
    return p.relative_to(REPO).as_posix()


def _problems(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    found = []
    for n, line in enumerate(text.splitlines(), start=1):
        for bad in FORBIDDEN:
            if bad in line:
                found.append(f"{_rel(path)}:{n}: {bad!r}: {line.strip()[:100]}")
        for m in MD_REF.finditer(line):
            ref = m.group(1)
            if Path(ref).name in GENERATED_MD:
                continue
            packaged = ref.removeprefix("cloudrm_plugin/")
            roots = (REPO / ref, path.parent / ref, REPO / "docs" / ref, REPO / packaged)
            if not any(r.is_file() for r in roots):
                found.append(f"{_rel(path)}:{n}: {ref} is not a file of the repository")
    return found


def _headings(page: Path) -> set[str]:
    return {
        line.lstrip("#").strip()
        for line in page.read_text(encoding="utf-8").splitlines()
        if line.startswith("#")
    }


def test_the_scan_sees_the_project():
    names = {_rel(p) for p in FILES}
    assert {"README.md", "docs/README.md", "engine/models/glf_cr.py", "engine/configs/models/glf_cr.yaml"} <= names
    assert not any(n.endswith((".pt", ".tif")) for n in names)


def test_no_pointer_outside_the_repository():
    problems = [p for f in FILES if _rel(f) not in PENDING for p in _problems(f)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", sorted(PENDING))
def test_pending_exceptions_are_still_needed(name):
    assert _problems(REPO / name), f"{name} is clean now: remove it from PENDING in {Path(__file__).name}"


def test_every_section_reference_names_a_heading():
    missing = []
    for path in FILES:
        text = path.read_text(encoding="utf-8")
        refs = [(REPO / m.group(1), m.group(2)) for m in DOC_SECTION.finditer(text)]
        refs += [(path.parent / m.group(1), m.group(2)) for m in LINK_SECTION.finditer(text)]
        for page, heading in refs:
            if not page.is_file():
                missing.append(f"{_rel(path)}: {page} does not exist")
            elif not any(h == heading or h.startswith(heading + " (") for h in _headings(page)):
                missing.append(f"{_rel(path)}: no heading {heading!r} in {_rel(page)}")
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("name", list_models())
def test_every_model_card_names_its_docs_page(name):
    card = model_card(name)
    page = REPO / card.docs
    assert card.docs.startswith("docs/models/") and page.is_file(), card.docs
    assert _headings(page) >= {"Parameter counts", "Implementation choices", "Training settings"}
    text = (REPO / "engine" / "configs" / "models" / f"{name}.yaml").read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    assert "spec" not in raw and raw["docs"] == card.docs
    # Comments name sections of the card's page in quotes: 'Parameter counts'.
    headings = _headings(page)
    for line in text.splitlines():
        comment = DOC_SECTION.sub("", line.partition("#")[2])
        for section in re.findall(r"(?<!\w)'([^']+)'(?!\w)", comment):
            assert section in headings, f"{name}.yaml: no heading {section!r} in {card.docs}"
