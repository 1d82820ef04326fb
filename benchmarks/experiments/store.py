"""A resumable results file: the records of an experiment in one JSON file, rewritten atomically
after every record, so that a restarted run skips what is done. Every write re-reads the file and
merges it under an exclusive lock (``<file>.lock``, ``fcntl.flock``), so runs writing into one
file at the same time (e.g. two sizes of one experiment) keep each other's records."""
from __future__ import annotations

import contextlib
import fcntl
import json
import pathlib
from typing import Callable

from ..machine import describe_machine
from ..report import write_json


def _read(path: pathlib.Path) -> dict:
    """The results file's payload ({} where there is none); ValueError for an unreadable one."""
    if not path.exists():
        return {}
    try:
        payload = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} exists but is not a readable results file ({err}); "
                         "move it away or choose another output folder") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("records", []), list):
        raise ValueError(f"{path} is not a results file (no list of records); move it away or "
                         "choose another output folder")
    return payload


class ResultStore:
    """``path``: the JSON file; ``key``: the record fields that identify a unit of work (e.g.
    ("method", "n", "trial")); ``header``: fields stored once (experiment, config, ...).

    ``checksum``: ``tangentless.kernels._shared.digest.sha256`` of the configuration and the data.
    An existing file with the same ``checksum`` is resumed: its records are kept and
    :meth:`done` reports them. One with another checksum raises ValueError (its results belong to
    another configuration or data set): choose another output folder or delete the file.
    Each session (start of a run) appends :func:`describe_machine` to ``sessions``; records carry
    the index of the session that produced them, and ``machine`` is the latest session's.
    Writers of one file in parallel: each write merges the file's records (by key) and top-level
    fields with this store's own under the lock, so none is lost.
    """

    def __init__(self, path: str | pathlib.Path, key: tuple[str, ...], header: dict, checksum: str):
        self.path, self.key, self.checksum = pathlib.Path(path), key, checksum
        self.session = describe_machine()
        self._header = {**header, "checksum": checksum}
        self._own: dict[tuple, dict] = {}      # this session's records and top-level fields
        self._fields: dict = {}
        with self._locked():
            previous = self._check(_read(self.path))
            self._session_index = len(previous.get("sessions", []))
            self._merge(previous, sessions=previous.get("sessions", []) + [self.session])
            self._write()

    def _check(self, previous: dict) -> dict:
        if previous and previous.get("checksum") != self.checksum:
            raise ValueError(
                f"{self.path} holds results of a different configuration or data set "
                f"(checksum {previous.get('checksum')}, this run {self.checksum}); "
                "choose another output folder or delete that file to start over")
        return previous

    @contextlib.contextmanager
    def _locked(self):
        """An exclusive lock on ``<path>.lock`` (the results file itself is replaced atomically)."""
        lock = self.path.with_name(self.path.name + ".lock")
        lock.parent.mkdir(parents=True, exist_ok=True)
        with open(lock, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _merge(self, previous: dict, sessions: list | None = None) -> None:
        """payload := the file's fields and records, then this store's header, fields and records
        (``sessions``: the file's, or the given list; this store's own at its index)."""
        records = {self._key(r): r for r in previous.get("records", [])}
        records.update(self._own)
        merged_sessions = list(sessions if sessions is not None else previous.get("sessions", []))
        if self._session_index < len(merged_sessions):
            merged_sessions[self._session_index] = self.session
        self.payload = {**previous, **self._header, **self._fields, "sessions": merged_sessions,
                        "machine": self.session, "records": list(records.values())}
        self._done = set(records)

    def _write(self) -> pathlib.Path:
        return write_json(self.path, self.payload)

    def _key(self, record: dict) -> tuple:
        return tuple(record[name] for name in self.key)

    @property
    def records(self) -> list[dict]:
        return self.payload["records"]

    def done(self, **key) -> bool:
        """Whether a record with these key fields is stored (as of this store's last write)."""
        return self._key(key) in self._done

    def commit(self, derive: Callable[[dict], dict] | None = None) -> dict:
        """Merge with the file under the lock, add ``derive(payload)``'s fields (e.g. a summary of
        all records), rewrite the file; the merged payload."""
        with self._locked():
            self._merge(self._check(_read(self.path)))
            if derive is not None:
                self.payload.update(derive(self.payload))
            self._write()
        return self.payload

    def add(self, record: dict) -> None:
        """Store one finished unit of work (adds ``session``) and rewrite the file."""
        record = {**record, "session": self._session_index}
        self._own[self._key(record)] = record
        self.commit()

    def update(self, **fields) -> None:
        """Set top-level fields (e.g. a summary) and rewrite the file."""
        self._fields.update(fields)
        self.commit()


def write_results(source: ResultStore | dict, path: pathlib.Path,
                  derive: Callable[[dict], dict]) -> dict:
    """The payload of a store (merged and rewritten under its lock) or of a plain payload (written
    to ``path``), with ``derive(payload)``'s fields added: what an experiment's report is drawn from."""
    if isinstance(source, ResultStore):
        return source.commit(derive)
    payload = {**source, **derive(source)}
    write_json(path, payload)
    return payload
