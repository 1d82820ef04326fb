"""ResultStore under concurrent writers (issue 12, item 1): two runs writing disjoint records into
one results file keep every record."""
from __future__ import annotations

import json
import multiprocessing

from tangentless.benchmarks.experiments.store import ResultStore

KEY = ("method", "n", "trial")
HEADER = {"experiment": "probe"}


def _write(path: str, n: int, count: int, barrier) -> None:
    store = ResultStore(path, KEY, HEADER, "same-checksum")
    barrier.wait()  # both stores are open (each read the file once) before either writes
    for trial in range(count):
        store.add({"method": "kernel", "n": n, "trial": trial, "accuracy": 0.5})
    store.update(**{f"matrix_{n}": {"seconds": n}})


def test_two_concurrent_writers_keep_every_record(tmp_path):
    path = str(tmp_path / "small_data.json")
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    writers = [context.Process(target=_write, args=(path, n, 16, barrier)) for n in (10, 20)]
    for p in writers:
        p.start()
    for p in writers:
        p.join(60)
        assert p.exitcode == 0
    payload = json.loads((tmp_path / "small_data.json").read_text())
    keys = {(r["method"], r["n"], r["trial"]) for r in payload["records"]}
    assert len(payload["records"]) == len(keys) == 32
    assert {"matrix_10", "matrix_20"} <= set(payload)
    assert len(payload["sessions"]) == 2
    assert {r["session"] for r in payload["records"]} == {0, 1}


def test_a_reopened_store_sees_records_another_store_added(tmp_path):
    path = tmp_path / "r.json"
    first, second = (ResultStore(path, KEY, HEADER, "c") for _ in range(2))
    first.add({"method": "kernel", "n": 10, "trial": 0})
    second.add({"method": "kernel", "n": 20, "trial": 0})
    first.add({"method": "kernel", "n": 10, "trial": 1})
    reopened = ResultStore(path, KEY, HEADER, "c")
    assert reopened.done(method="kernel", n=20, trial=0)
    assert len(reopened.records) == 3
