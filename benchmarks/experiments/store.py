"""A resumable results file: the records of an experiment in one JSON file, rewritten atomically
after every record, so that a restarted run skips what is done."""
from __future__ import annotations

import json
import pathlib

from ..machine import describe_machine
from ..report import write_json


class ResultStore:
    """``path``: the JSON file; ``key``: the record fields that identify a unit of work (e.g.
    ("method", "n", "trial")); ``header``: fields stored once (experiment, config, ...).

    ``checksum``: ``tangentless.kernels._shared.digest.sha256`` of the configuration and the data.
    An existing file with the same ``checksum`` is resumed: its records are kept and
    :meth:`done` reports them. One with another checksum raises ValueError (its results belong to
    another configuration or data set): choose another output folder or delete the file.
    Each session (start of a run) appends :func:`describe_machine` to ``sessions``; records carry
    the index of the session that produced them, and ``machine`` is the latest session's.
    """

    def __init__(self, path: str | pathlib.Path, key: tuple[str, ...], header: dict, checksum: str):
        self.path, self.key = pathlib.Path(path), key
        previous = {}
        if self.path.exists():
            try:
                previous = json.loads(self.path.read_text())
            except (OSError, json.JSONDecodeError) as err:
                raise ValueError(f"{self.path} exists but is not a readable results file ({err}); "
                                 "move it away or choose another output folder") from None
            if previous.get("checksum") != checksum:
                raise ValueError(
                    f"{self.path} holds results of a different configuration or data set "
                    f"(checksum {previous.get('checksum')}, this run {checksum}); "
                    "choose another output folder or delete that file to start over")
        machine = describe_machine()
        self.payload = {**header, "checksum": checksum,
                        "sessions": previous.get("sessions", []) + [machine], "machine": machine,
                        "records": previous.get("records", [])}
        for name in set(previous) - set(self.payload):   # results added by an earlier session
            self.payload[name] = previous[name]
        self._done = {self._key(r) for r in self.payload["records"]}
        self.write()

    def _key(self, record: dict) -> tuple:
        return tuple(record[name] for name in self.key)

    @property
    def records(self) -> list[dict]:
        return self.payload["records"]

    def done(self, **key) -> bool:
        """Whether a record with these key fields is stored."""
        return self._key(key) in self._done

    def add(self, record: dict) -> None:
        """Store one finished unit of work (adds ``session``) and rewrite the file."""
        record = {**record, "session": len(self.payload["sessions"]) - 1}
        self.payload["records"].append(record)
        self._done.add(self._key(record))
        self.write()

    def update(self, **fields) -> None:
        """Set top-level fields (e.g. a summary) and rewrite the file."""
        self.payload.update(fields)
        self.write()

    def write(self) -> pathlib.Path:
        return write_json(self.path, self.payload)
