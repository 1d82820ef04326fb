"""Estimators saved without pickle: one ``.npz`` of plain arrays plus a JSON record, read back with
``allow_pickle=False``. Each estimator says what its fitted state is (:class:`Persistent`); this
module only writes and reads it."""
from __future__ import annotations

import json
import pathlib
import zipfile

import numpy as np
from sklearn.utils.validation import check_is_fitted

from .atomic import atomic_write

__all__ = ["FORMAT", "ModelFileError", "Persistent", "save_state", "load_state"]

#: the format written into every file; a file of another format is refused
FORMAT = "tangentless-estimator-1"
_RECORD = "__record__"


class ModelFileError(ValueError):
    """A saved model file that is missing, unreadable, of another format or estimator, or malformed."""


def save_state(path, kind: str, params: dict, meta: dict, arrays: dict[str, np.ndarray]) -> pathlib.Path:
    """Write ``{format, kind, params, meta}`` (JSON) and ``arrays`` to ``path`` (.npz), atomically.
    ``params``/``meta`` must be JSON-serializable; ``arrays`` plain (non-object) numpy arrays."""
    if _RECORD in arrays:
        raise ValueError(f"{_RECORD!r} is reserved")
    for name, a in arrays.items():
        if np.asarray(a).dtype == object:
            raise TypeError(f"array {name!r} has dtype object; persist plain arrays only")
    record = json.dumps({"format": FORMAT, "kind": kind, "params": params, "meta": meta})
    return atomic_write(pathlib.Path(path), lambda f: np.savez(f, **{_RECORD: np.array(record)},
                                                               **{k: np.asarray(v) for k, v in arrays.items()}))


def load_state(path, kind: str) -> tuple[dict, dict, dict[str, np.ndarray]]:
    """``(params, meta, arrays)`` of a file written by :func:`save_state` for estimator ``kind``;
    :class:`ModelFileError` names what is wrong with any other file."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ModelFileError(f"no such model file: {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise ModelFileError(f"{path} is not a readable model file: {err}") from None
    if _RECORD not in arrays:
        raise ModelFileError(f"{path} is not a tangentless model file (no {_RECORD} record)")
    try:
        record = json.loads(str(arrays.pop(_RECORD)))
    except (ValueError, RecursionError) as err:
        raise ModelFileError(f"{path}: unreadable record: {err}") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ModelFileError(f"{path}: format {record.get('format') if isinstance(record, dict) else None!r} "
                             f"is not {FORMAT!r}")
    if record.get("kind") != kind:
        raise ModelFileError(f"{path} holds a {record.get('kind')!r}, not a {kind!r}")
    params, meta = record.get("params"), record.get("meta")
    if not isinstance(params, dict) or not isinstance(meta, dict):
        raise ModelFileError(f"{path}: params and meta must be JSON objects")
    return params, meta, arrays


class Persistent:
    """Mixin for estimators that save and load themselves: ``est.save(path)``, ``Cls.load(path)``.

    A subclass implements ``_fitted_state() -> (meta: dict, arrays: dict)`` (JSON-able meta, plain
    arrays) and ``_restore_fitted_state(meta, arrays)`` (sets every fitted attribute ending in
    ``_``); params are ``get_params(deep=False)``, which a subclass whose params are not JSON-able
    maps with ``_params_to_json`` / ``_params_from_json``.
    """

    def _params_to_json(self) -> dict:
        return self.get_params(deep=False)

    @classmethod
    def _params_from_json(cls, params: dict) -> dict:
        return params

    def save(self, path) -> pathlib.Path:
        """Write this fitted estimator to ``path`` (.npz, atomically); returns the path."""
        check_is_fitted(self)
        meta, arrays = self._fitted_state()
        return save_state(path, type(self).__name__, self._params_to_json(), meta, arrays)

    @classmethod
    def load(cls, path):
        """The fitted estimator saved at ``path`` by :meth:`save`."""
        params, meta, arrays = load_state(path, cls.__name__)
        try:
            estimator = cls(**cls._params_from_json(params))
            estimator._restore_fitted_state(meta, arrays)
        except (KeyError, TypeError, ValueError) as err:
            raise ModelFileError(f"{path}: malformed {cls.__name__} file: {err!r}") from None
        return estimator
