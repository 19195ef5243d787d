"""The docs stand alone: no citation of notes outside the repository, every pointer into docs/references.md
names a section that exists, and every file docs/architecture.md tells a reader to open is there."""
from __future__ import annotations

import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
SKIPPED_DIRS = {".git", ".venv", "runs", "build", "node_modules", "__pycache__"}
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".cfg", ".txt", ".sh"}
THIS_FILE = Path(__file__).resolve()

# Notes that lived beside the repository while it was written; readers of a clone do not have them.
OUTSIDE_CITATION = re.compile(r"var-official\.md|FACTS\.md|anchors\.md|\.\./shared/|shared/reference"
                              r"|evaluation\.md (?:sections? )?[A-F](?:\.\d)?\b")
SECTION_POINTER = re.compile(r"references\.md`?,? ?((?:§\d+(?:\.\d+)?(?:-§?\d+(?:\.\d+)?)?(?:,? (?:and )?)?)+)")


def repo_text_files():
    for path in sorted(REPO_ROOT.rglob("*")):
        if path.is_file() and path.suffix in TEXT_SUFFIXES and path.resolve() != THIS_FILE \
                and not SKIPPED_DIRS.intersection(path.relative_to(REPO_ROOT).parts):
            yield path


def test_nothing_cites_notes_outside_the_repository():
    offenders = [f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}"
                 for path in repo_text_files()
                 for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
                 if OUTSIDE_CITATION.search(line)]
    assert not offenders, "cite docs/references.md instead:\n" + "\n".join(offenders)


def reference_sections() -> set[str]:
    text = (REPO_ROOT / "docs" / "references.md").read_text()
    return set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", text, flags=re.MULTILINE))


def test_every_pointer_into_references_names_an_existing_section():
    sections = reference_sections()
    assert {"1.2", "2.3", "2.6", "3", "7"} <= sections   # the parser reads the headings at all
    pointers = []
    for path in repo_text_files():
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for match in SECTION_POINTER.finditer(line):
                for ref in re.findall(r"\d+(?:\.\d+)?", match.group(1)):
                    pointers.append((f"{path.relative_to(REPO_ROOT)}:{number}", ref))
    assert len(pointers) >= 8, pointers                   # the citations are found, so the check means something
    missing = [f"{where}: §{ref}" for where, ref in pointers if ref not in sections]
    assert not missing, "no such section in docs/references.md:\n" + "\n".join(missing)


def test_every_file_the_architecture_guide_names_exists():
    text = (REPO_ROOT / "docs" / "architecture.md").read_text()
    named = set(re.findall(r"`((?:models|harness|sweeps|analysis|reports|tests|benchmarks|docs|scripts)/[\w./]*)`",
                           text))
    assert len(named) >= 30, sorted(named)
    missing = sorted(p for p in named if "*" not in p and not (REPO_ROOT / p).exists())
    assert not missing, f"docs/architecture.md names files that do not exist: {missing}"


def test_every_file_in_the_folder_table_exists_in_its_folder():
    rows = re.findall(r"^\| `([\w/]+)/`[^|]*\|(.*)\|$", (REPO_ROOT / "docs" / "architecture.md").read_text(),
                      flags=re.MULTILINE)
    assert len(rows) >= 12, rows
    named = [(folder, name) for folder, cell in rows for name in re.findall(r"`([\w./]+\.(?:py|md|csv|yaml))`", cell)]
    assert len(named) >= 25, named
    missing = [f"{folder}/{name}" for folder, name in named
               if not (REPO_ROOT / folder / name).exists() and not (REPO_ROOT / name).exists()]
    assert not missing, f"docs/architecture.md's folder table names files that do not exist: {missing}"
