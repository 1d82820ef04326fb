"""Estimators saved without pickle: one ``.npz`` of plain arrays plus a JSON record, read back with
``allow_pickle=False``. Each estimator says what its fitted state is (:class:`Persistent`); this
module only writes and reads it."""
from __future__ import annotations

import json
import math
import numbers
import pathlib
import zipfile
from typing import Any, Callable

import numpy as np
from sklearn.utils.validation import check_is_fitted

from .atomic import atomic_write

__all__ = ["FORMAT", "ModelFileError", "Persistent", "save_state", "load_state", "malformed", "stored_array",
           "stored_choice", "stored_number", "stored_shape", "check_stored_classes", "stored_history",
           "stored_budget"]

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
    contents: dict[str, Any] = {_RECORD: np.array(record), **{k: np.asarray(v) for k, v in arrays.items()}}
    return atomic_write(pathlib.Path(path), lambda f: np.savez(f, **contents))


_NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def _check_member(path: pathlib.Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    """ModelFileError unless the .npy member's header is one numpy writes (no object dtype) and
    the shape x itemsize it claims is the number of bytes the member holds (from the zip
    directory): nothing is allocated for an array the file does not contain."""
    name = info.filename.removesuffix(".npy")
    with archive.open(info) as member:
        try:
            version = np.lib.format.read_magic(member)
            if version not in _NPY_HEADERS:
                raise ValueError(f".npy format version {version} is not one save_state writes")
            shape, _, dtype = _NPY_HEADERS[version](member)
            header = member.tell()
        except (ValueError, EOFError, OSError, SyntaxError) as err:
            raise ModelFileError(f"{path}: array {name!r} has no readable .npy header ({err})") from None
    if dtype.hasobject:
        raise ModelFileError(f"{path}: array {name!r} has dtype object; model files hold plain arrays")
    claimed = math.prod(shape) * dtype.itemsize
    if claimed != info.file_size - header:
        raise ModelFileError(f"{path}: array {name!r} claims shape {shape} of {dtype} ({claimed} bytes) "
                             f"but holds {info.file_size - header} bytes")


def _read_arrays(path: pathlib.Path) -> dict[str, np.ndarray]:
    """Every array of the .npz at ``path``, each member's size checked before it is read."""
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                _check_member(path, archive, info)
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, MemoryError) as err:
        if isinstance(err, ModelFileError):
            raise
        raise ModelFileError(f"{path} is not a readable model file: {err}") from None


def load_state(path, kind: str) -> tuple[dict, dict, dict[str, np.ndarray]]:
    """``(params, meta, arrays)`` of a file written by :func:`save_state` for estimator ``kind``;
    :class:`ModelFileError` names what is wrong with any other file (every array's size is checked
    against the file before it is read)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ModelFileError(f"no such model file: {path}")
    arrays = _read_arrays(path)
    if _RECORD not in arrays:
        raise ModelFileError(f"{path} is not a tangentless model file (no {_RECORD} record)")
    text = arrays.pop(_RECORD)
    try:
        if text.dtype.kind != "U" or text.ndim != 0:
            raise ValueError(f"it is a {text.dtype} {text.shape} array, not text")
        record = json.loads(str(text))
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


def malformed(path, kind: str, err: Exception) -> ModelFileError:
    """The one-line ModelFileError of a ``kind`` file whose fields ``err`` (KeyError: a missing
    field; TypeError, ValueError: a wrong one) rejected."""
    if isinstance(err, ModelFileError):
        return err
    problem = f"missing field {err}" if isinstance(err, KeyError) else " ".join(str(err).split())
    return ModelFileError(f"{path}: malformed {kind} file: {problem}")


def stored_array(arrays: dict, name: str, ndim: int, kinds: str = "f", *, finite: bool = True,
                 shape: tuple | None = None) -> np.ndarray:
    """``arrays[name]`` checked as a saved fitted state must be: ``ndim`` dimensions, a dtype kind
    among ``kinds`` (numpy's letters: "f" float, "i"/"u" integers, "b" bool, "U" text), finite
    values (for float kinds) and ``shape`` (None entries: any size); ValueError naming it."""
    if name not in arrays:
        raise KeyError(name)
    a = arrays[name]
    if a.ndim != ndim or a.dtype.kind not in kinds:
        raise ValueError(f"{name} must be a {ndim}-D array of kind {kinds!r}; got {a.dtype} {a.shape}")
    if shape is not None and any(want is not None and got != want for got, want in zip(a.shape, shape)):
        raise ValueError(f"{name} has shape {a.shape}; expected {tuple('*' if w is None else w for w in shape)}")
    if finite and a.dtype.kind == "f" and not np.isfinite(a).all():
        raise ValueError(f"{name} holds NaN or inf values")
    return a


def stored_number(meta: dict, name: str, *, integer: bool = False, minimum: float | None = None,
                  below: float | None = None, optional: bool = False):
    """``meta[name]``: a finite number (an integer where ``integer``) >= ``minimum`` and <
    ``below`` where given, or None where ``optional``; ValueError naming it."""
    value = meta[name]
    if value is None and optional:
        return None
    kind = numbers.Integral if integer else numbers.Real
    if (isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value)
            or (minimum is not None and float(value) < minimum)
            or (below is not None and float(value) >= below)):
        bounds = "".join([f" >= {minimum}" if minimum is not None else "",
                          f" and < {below}" if below is not None else ""])
        raise ValueError(f"{name} must be {'an integer' if integer else 'a number'}{bounds}; got {value!r}")
    return value


def stored_choice(meta: dict, name: str, choices: tuple):
    """``meta[name]``, one of ``choices``; ValueError naming it."""
    value = meta[name]
    if not any(value is c or (isinstance(value, str) and value == c) for c in choices):
        raise ValueError(f"{name} must be one of {choices}; got {value!r}")
    return value


def stored_shape(meta: dict, name: str, length: int | None = None) -> tuple[int, ...]:
    """``meta[name]``: a list of positive integers (``length`` of them where given), as a tuple."""
    value = meta[name]
    if (not isinstance(value, list) or (length is not None and len(value) != length)
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        raise ValueError(f"{name} must be a list of {length or 'some'} positive integers; got {value!r}")
    return tuple(value)


def check_stored_classes(classes: np.ndarray) -> np.ndarray:
    """Saved ``classes`` (c,): at least two, all distinct; ValueError otherwise."""
    if len(classes) < 2 or len(np.unique(classes)) != len(classes):
        raise ValueError(f"classes must be >= 2 distinct labels; got {classes.tolist()[:10]}")
    return classes


def stored_history(meta: dict, name: str = "history") -> list[dict]:
    """``meta[name]``: a training history, a list of per-epoch dicts of metrics."""
    value = meta[name]
    if not isinstance(value, list) or not all(isinstance(epoch, dict) for epoch in value):
        raise ValueError(f"{name} must be a list of per-epoch objects; got {type(value).__name__}")
    return value


def stored_budget(meta: dict, name: str = "budget") -> dict:
    """``meta[name]``: what a training run trained on, an object of numbers."""
    value = meta[name]
    if not isinstance(value, dict) or not all(isinstance(v, (int, float, type(None))) and not isinstance(v, bool)
                                              for v in value.values()):
        raise ValueError(f"{name} must be an object of numbers; got {value!r}"[:200])
    return value


class Persistent:
    """Mixin for estimators that save and load themselves: ``est.save(path)``, ``Cls.load(path)``.

    A subclass implements ``_fitted_state() -> (meta: dict, arrays: dict)`` (JSON-able meta, plain
    arrays) and ``_restore_fitted_state(meta, arrays)`` (sets every fitted attribute ending in
    ``_``, each read through :func:`stored_array`, :func:`stored_number`, :func:`stored_choice`,
    :func:`stored_shape` and checked for consistency, so a malformed file is refused at load with
    one line rather than failing later); params are ``get_params(deep=False)``, which a subclass whose params are not JSON-able
    maps with ``_params_to_json`` / ``_params_from_json``.
    """
    # provided by the estimator class this is mixed into, and by the subclass (declared for type
    # checkers only: annotations, no attributes)
    get_params: Callable[..., dict]
    _fitted_state: Callable[[], tuple[dict, dict]]
    _restore_fitted_state: Callable[[dict, dict], None]

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
            raise malformed(path, cls.__name__, err) from None
        return estimator
