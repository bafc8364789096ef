"""The user-facing documents point at files that exist, and the README's commands are CI's."""
from __future__ import annotations

import importlib
import re

import pytest

from conftest import ROOT

DOCS = [ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "experiments" / "README.md",
        ROOT / "experiments" / "lineage.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
# a repository path in backticks or plain text, with the character that ends it
REPO_PATH = re.compile(
    r"(?<![\w/.=$-])((?:weights|experiments|benchmarks|examples|docs)/[\w./-]*\w)(.?)")


def link_targets(text: str) -> list[str]:
    """Relative targets of markdown links, anchors dropped."""
    out = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        out.append(target.split("#", 1)[0])
    return out


def repo_paths(text: str) -> list[str]:
    """Paths from the repository root named in the text, globs and old names left out."""
    out = []
    for path, after in REPO_PATH.findall(text):
        if after in "*{" and after or path.startswith("weights/train"):
            continue  # a pattern (definet-2dmd-v*/), or the folder's pre-move name
        out.append(path)
    return out


def test_link_and_path_extraction():
    text = ("see [card](../weights/README.md#targets), [web](https://x.org/a) and "
            "`experiments/runs/definet-2dmd-v*/`, `weights/train/x.md`, "
            "`experiments/runs/data_v8.md`, `RUN=weights/x`.")
    assert link_targets(text) == ["../weights/README.md"]
    assert repo_paths(text) == ["experiments/runs/data_v8.md"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_documents_name_existing_files(doc):
    """Bug class: the experiment history moved (weights/train -> experiments/runs) and
    every document naming a run folder, rule file or script had to follow."""
    text = doc.read_text()
    missing = [t for t in link_targets(text) if not (doc.parent / t).exists()]
    missing += [p for p in repo_paths(text) if not (ROOT / p).exists()]
    assert not missing, f"{doc.relative_to(ROOT)} names missing files: {missing}"


def resolves(dotted: str) -> bool:
    """``ase_definet.a.b.C`` names a module, or an attribute of the longest module prefix."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for name in parts[i:]:
            if not hasattr(obj, name):
                return False
            obj = getattr(obj, name)
        return True
    return False


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_documents_name_existing_modules(doc):
    """Modules move (formats.py became a package, train.py was split): the docs follow."""
    names = set(re.findall(r"ase_definet(?:\.[A-Za-z_]\w*)+", doc.read_text()))
    assert not [n for n in sorted(names) if not resolves(n)]


def test_resolves_tells_names_apart():
    assert resolves("ase_definet.errors.DefiNetInputError")
    assert not resolves("ase_definet.errors.NoSuchError")
    assert not resolves("ase_definet.no_such_module")


def named_tests(text: str) -> list[tuple[str, str | None]]:
    """(file, test) pairs of `test_x.py::test_y` references; `::test_z` reuses the file."""
    out, current = [], None
    for file, test in re.findall(r"`(test_\w+\.py)?(?:::(test_\w+))?`", text):
        current = file or current
        if (file or test) and current:
            out.append((current, test or None))
    return out


def test_named_tests_reuse_the_last_file():
    text = "`test_a.py::test_one`, `::test_two`; `test_b.py`"
    assert named_tests(text) == [("test_a.py", "test_one"), ("test_a.py", "test_two"),
                                 ("test_b.py", None)]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_documents_name_existing_tests(doc):
    """The hard-input table cites a test per row: each must exist under that name."""
    missing = []
    for file, test in named_tests(doc.read_text()):
        path = ROOT / "tests" / file
        if not path.is_file() or (test and f"def {test}(" not in path.read_text()):
            missing.append(f"{file}::{test}" if test else file)
    assert not missing


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Two commands on a fresh machine\n\n```bash\n(.*?)```", readme, re.S)
    assert block, "README has no two-commands block"
    install, test = block.group(1).strip().splitlines()
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == test
    example = re.search(r"definet relax (\S+)", install).group(1)
    assert (ROOT / example).is_file()


def test_citation_version_is_the_package_version():
    from ase_definet import __version__
    cff = re.search(r"^version: (\S+)$", (ROOT / "CITATION.cff").read_text(), re.M)
    bib = re.search(r"@software\{.*?version\s*=\s*\{([^}]*)\}", (ROOT / "README.md").read_text(),
                    re.S)
    assert cff and bib
    assert cff.group(1) == bib.group(1) == __version__
