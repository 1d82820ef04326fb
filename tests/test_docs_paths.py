"""The README and docs/ cite only files that are in the repository: every backticked repository
path (with a folder and a file suffix) exists, relative to the root or to benchmarks/results/
(where result pages cite their files). Paths on the user's machine or inside a Gram store are
written with placeholders (DIR, OUT, i-j) and are not paths of this repository."""
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PATH = re.compile(r"`([\w.-]+(?:/[\w.-]+)+\.(?:json|py|md|png|toml|cu|cuh|sh|txt))`")
#: placeholders that mark a path as not the repository's (a user's folder, a store's layout)
PLACEHOLDERS = ("i-j", "DIR", "OUT", "FOLDER", "K.zarr", "report/")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_cited_repository_paths_exist(doc):
    cited = {m for m in PATH.findall(doc.read_text()) if not any(p in m for p in PLACEHOLDERS)}
    missing = sorted(p for p in cited
                     if not (ROOT / p).exists() and not (ROOT / "benchmarks" / "results" / p).exists())
    assert not missing, f"{doc.name} cites {missing}"
