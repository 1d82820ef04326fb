"""Every number in a table of the README or docs/ comes from a committed JSON.

Each Markdown table is announced by an HTML comment on the line above its header:

- ``<!-- numbers: benchmarks/results/a.json#results/[seconds,rows], benchmarks/results/b.json -->``:
  a table of measurements. Each source is a file and, after ``#``, a path to its *records* (the
  entries the table's rows show): segments split by ``/``, each a key, ``*`` (every value) or
  ``{a,b}`` (those keys); a key met by a list applies to each item; a final ``[a,b]`` keeps only
  those keys of each record. Every cell's numbers (names such as "Myrtle5" or "x1/8" and code
  spans aside), together with the numbers of its row's first cell (the row's key, e.g. n), must
  be found in one record, each at the precision it is printed with (as stored, as the percentage
  of a stored fraction, or with its sign flipped). Numbers must agree with the stored ones *and*
  sit together as they do in the file, so a number edited by hand rarely finds a record by chance;
- ``<!-- numbers: none: REASON -->``: a table of no measurements (a layout, a grid, a set of
  definitions), or ``<!-- numbers: projection: REASON -->``: arithmetic on stated assumptions,
  said to be unmeasured in the text. The reason is required.

So a table edited by hand, or a rerun whose JSON changed, fails here until the two agree."""
import json
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKER = re.compile(r"^<!-- numbers: (.*) -->$")
SOURCE_SPLIT = re.compile(r",\s*(?=[\w./-]+\.json)")
#: words with digits in them are names (Myrtle5, ResNet-9, x1/8, 4:2:0 chroma), not numbers
NAME = re.compile(r"[A-Za-z][\w/.:-]*\d[\w/.:-]*|\d+:\d+:\d+")
#: the separator of a range between two numbers: "26.7-52.1", "-0.8 .. +1.8"
RANGE = re.compile(r"(?<=\d)-(?=\d)|\s\.\.\s")
NUMBER = re.compile(r"(?<![\w.])[-+−]?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?")


def stored_numbers(node) -> list[float]:
    """Every number in a JSON value: its numeric leaves and the numbers inside its strings."""
    if isinstance(node, bool) or node is None:
        return []
    if isinstance(node, (int, float)):
        return [float(node)]
    if isinstance(node, dict):
        return [v for value in node.values() for v in stored_numbers(value)]
    if isinstance(node, list):
        return [v for value in node for v in stored_numbers(value)]
    return [float(t.replace(",", "").replace("−", "-").rstrip(",")) for t in printed_numbers(node)]


def select(node, segments: list[str]) -> list:
    """The values a selector path names (see the module docstring)."""
    if not segments:
        return list(node) if isinstance(node, list) else [node]
    if isinstance(node, list):
        return [part for item in node for part in select(item, segments)]
    if not isinstance(node, dict):
        return []
    head, rest = segments[0], segments[1:]
    if head == "*":
        keys = list(node)
    elif head.startswith("{"):
        keys = [k for k in head[1:-1].split(",") if k in node]
    else:
        assert head in node, f"the selector names {head!r}, not a key of the stored document"
        keys = [head]
    return [part for k in keys for part in select(node[k], rest)]


def records(source: str) -> list[list[float]]:
    """The numbers of each record of one ``file.json#path`` source."""
    path, _, selector = source.partition("#")
    segments = selector.split("/") if selector else []
    keep = segments.pop()[1:-1].split(",") if segments and segments[-1].startswith("[") else None
    found = select(json.loads((ROOT / path).read_text()), segments)
    if keep is not None:
        found = [{k: v for k, v in node.items() if k in keep} for node in found if isinstance(node, dict)]
    return [stored_numbers(node) for node in found]


def printed_numbers(text: str) -> list[str]:
    """The numbers printed in a piece of text, names and code spans left out."""
    text = NAME.sub(" ", re.sub(r"`[^`]*`", " ", text))
    return [t.rstrip(",") for t in NUMBER.findall(text)]


def agrees(printed: str, stored: list[float]) -> bool:
    """Whether ``printed`` is some stored value at the printed precision (or its percentage)."""
    digits = printed.replace(",", "").replace("−", "-").lstrip("+")
    mantissa, _, exponent = digits.partition("e")
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    half_ulp = 0.5 * 10.0 ** (-decimals + (int(exponent) if exponent else 0))
    value = float(digits)
    return any(abs(candidate - value) <= half_ulp * (1 + 1e-9)
               for v in stored for candidate in (v, 100 * v, -v, -100 * v))


def unfounded(rows: list[str], sources: list[list[float]], header: bool = False) -> list[str]:
    """The cells of a table whose numbers, with their row's key, are in no single record.

    A first cell that is a number (n, a size) is the row's key and must sit in each record that
    its row's cells come from; a first cell of words names a configuration and is not checked,
    except in the ``header`` (the first row, when given), whose every cell is checked on its own.
    Alternatives ("62.6% / 65.1%") and ranges ("26.7-52.1", "-0.8 .. +1.8") come from one record
    each."""
    bad = []
    for i, row in enumerate(rows):
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        first = cells[0].replace(",", "")
        key = printed_numbers(cells[0]) if re.fullmatch(r"[\d.]+", first) else []
        for cell in cells if key or (header and i == 0) else cells[1:]:
            for part in RANGE.sub(" / ", cell).split(" / "):
                wanted = printed_numbers(part)
                if wanted and not any(all(agrees(t, record) for t in wanted + key) for record in sources):
                    bad.append(cell)
                    break
    return bad


def tables(doc: pathlib.Path) -> list[tuple[int, str | None, list[str]]]:
    """(line number, marker text or None, rows: the header first) of each table of a Markdown file."""
    lines, found, in_code = doc.read_text().splitlines(), [], False
    for i, line in enumerate(lines):
        in_code ^= line.startswith("```")
        if in_code or not line.startswith("|") or i + 1 >= len(lines) or not lines[i + 1].startswith("|---"):
            continue
        marker = MARKER.match(lines[i - 1]) if i else None
        rows, j = [], i + 2
        while j < len(lines) and lines[j].startswith("|"):
            rows.append(lines[j])
            j += 1
        found.append((i + 1, marker.group(1) if marker else None, [line] + rows))
    return found


CASES = [(doc, line, marker, rows) for doc in DOCS for line, marker, rows in tables(doc)]


@pytest.mark.parametrize("doc, line, marker, rows", CASES,
                         ids=[f"{doc.name}:{line}" for doc, line, _, _ in CASES])
def test_table_numbers_come_from_committed_json(doc, line, marker, rows):
    assert marker is not None, f"{doc.name}:{line}: a table without a '<!-- numbers: ... -->' line above it"
    kind, _, reason = marker.partition(":")
    if kind in ("none", "projection"):
        assert reason.strip(), f"{doc.name}:{line}: '{kind}' needs a reason"
        return
    sources = [s.strip() for s in SOURCE_SPLIT.split(marker)]
    missing = [s for s in sources if not (ROOT / s.partition("#")[0]).is_file()]
    assert not missing, f"{doc.name}:{line}: cites {missing}, not committed files"
    bad = unfounded(rows, [record for s in sources for record in records(s)], header=True)
    assert not bad, f"{doc.name}:{line}: cells {bad} are in no record of {sources}"


def test_the_checker_catches_an_edited_number():
    stored = [0.4105, 908.2, 3.7684, -0.0141, 1.2e-5]
    assert agrees("41.0", stored) and agrees("41.1", stored) and agrees("908", stored)
    assert agrees("3.8", stored) and agrees("-1.4", stored) and agrees("+1.4", stored)
    assert agrees("1e-5", stored) and agrees("1.2e-5", stored) and not agrees("1.3e-5", stored)
    assert not agrees("41.3", stored) and not agrees("909", stored) and not agrees("3.9", stored)
    assert printed_numbers("| Myrtle5, n = 192 | ResNet-9 x1/8 | 3.8x | `a=2` | 1,000 |") == ["192", "3.8", "1,000"]


def test_a_cell_must_sit_in_one_record_with_its_row_key():
    table = [[10.0, 2.0, 0.176, 0.028], [20.0, 20.0, 0.212, 0.022]]
    assert not unfounded(["| 10 | 17.6 ± 2.8 (2) |", "| 20 | 21.2 ± 2.2 (20) |"], table)
    assert not unfounded(["| range | 17.6-21.2 | 2.8 .. 2.2 | 17.6 / 21.2 |"], table)
    assert unfounded(["| 10 | 21.2 ± 2.2 |"], table) == ["21.2 ± 2.2"]         # another row's numbers
    assert unfounded(["| 10 | 17.6 ± 2.2 |"], table) == ["17.6 ± 2.2"]         # mixed from two records


def test_the_selector_names_records():
    document = {"summary": [{"n": 10, "mean": 0.2, "all": [0.9]}, {"n": 20, "mean": 0.3, "all": [0.8]}],
                "groups": {"a b": {"x": 1.5, "y": 2.5}, "c": {"x": 3.5}}}
    assert [stored_numbers(p) for p in select(document, ["groups", "*", "x"])] == [[1.5], [3.5]]
    assert [stored_numbers(p) for p in select(document, ["groups", "{a b}", "y"])] == [[2.5]]
    with pytest.raises(AssertionError, match="not a key"):
        select(document, ["groups", "d"])


def test_records_keep_only_the_named_keys(tmp_path, monkeypatch):
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    (tmp_path / "r.json").write_text(json.dumps({"summary": [{"n": 10, "mean": 0.2, "all": [0.9]}]}))
    assert records("r.json#summary/[n,mean]") == [[10.0, 0.2]]
    assert records("r.json#summary") == [[10.0, 0.2, 0.9]]


def test_every_doc_has_been_read():
    assert len(CASES) >= 10, "the table finder found almost no tables"


def _perturbed(cell: str):
    """The cell with one of its numbers moved by -2, +1 or +3 units of its last printed digit."""
    for match in NUMBER.finditer(cell):
        token = match.group(0).rstrip(",")
        digits = token.replace(",", "").lstrip("+")
        if "e" in digits:
            continue
        decimals = len(digits.split(".")[1]) if "." in digits else 0
        for step in (-2, 1, 3):
            moved = f"{float(digits) + step * 10 ** -decimals:.{decimals}f}"
            yield cell[:match.start()] + moved + cell[match.start() + len(token):]


MEASURED = [case for case in CASES if case[2] and case[2].split(":")[0] not in ("none", "projection")]


@pytest.mark.parametrize("doc, line, marker, rows", MEASURED,
                         ids=[f"{doc.name}:{line}" for doc, line, _, _ in MEASURED])
def test_the_check_catches_most_edited_numbers(doc, line, marker, rows):
    """The check is only worth having if an edited number rarely finds a record by chance: in each
    measured table, at least 60% of single-number edits of its cells must fail it."""
    sources = [record for s in SOURCE_SPLIT.split(marker) for record in records(s.strip())]
    tried = caught = 0
    for row in rows[1:]:
        cells = row.strip().strip("|").split("|")
        for i in range(1, len(cells)):
            for edited in _perturbed(cells[i]):
                tried += 1
                caught += bool(unfounded(["|" + "|".join(cells[:i] + [edited] + cells[i + 1:]) + "|"], sources))
    assert tried and caught / tried >= 0.6, f"{doc.name}:{line}: only {caught}/{tried} edits caught"
