"""docs/tutorial.md runs as written: its Python blocks, in order, in one namespace, and what they
print is what the text says (symmetric PSD kernel, bit-identical resumed store, a cache that
computes fewer values than the search asks for)."""
import contextlib
import io
import pathlib
import re

import pytest

TUTORIAL = pathlib.Path(__file__).resolve().parents[1] / "docs" / "tutorial.md"


@pytest.mark.slow
def test_the_tutorial_runs_and_says_what_it_prints(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", TUTORIAL.read_text(), flags=re.S)
    assert len(blocks) == 5
    monkeypatch.chdir(tmp_path)
    namespace, printed = {}, io.StringIO()
    with contextlib.redirect_stdout(printed):
        for block in blocks:
            exec(compile(block, str(TUTORIAL), "exec"), namespace)
    lines = printed.getvalue().splitlines()
    assert lines[0] == "(300, 300) True True"
    assert float(lines[1].split()[1]) > 0.9                     # the kernel on digits
    assert lines[3] == "True True"                              # the resumed store
    assert float(lines[4].rsplit(" ", 1)[1]) > 0.8               # Nystrom, 100 centers
    # the search (2 candidates x 3 folds of 200 + 100 images, and the refit) computes the 300
    # training images' matrix once, where it asks for 2 x 3 x (200.201/2 + 100.200) + 300.301/2;
    # the final score adds the 300 test images against the 300 training images
    assert namespace["cache"].evaluations == 300 * 301 // 2 + 300 * 300
