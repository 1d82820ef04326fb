"""Fitted child estimators inside a parent's saved state (see :class:`.persist.Persistent`): a parent
that holds fitted estimators (a classifier's ZCA and ridge) stores each child's kind, params and
meta under one meta key and the child's arrays under ``"<key>.<name>"``."""
from __future__ import annotations

import numpy as np

__all__ = ["child_state", "restore_child"]


def child_state(key: str, child) -> tuple[dict, dict[str, np.ndarray]]:
    """``({key: {"kind", "params", "meta"}}, {"<key>.<name>": array})`` of a fitted ``Persistent``
    child, to merge into its parent's ``_fitted_state``."""
    meta, arrays = child._fitted_state()
    record = {"kind": type(child).__name__, "params": child._params_to_json(), "meta": meta}
    return {key: record}, {f"{key}.{name}": array for name, array in arrays.items()}


def restore_child(cls, key: str, meta: dict, arrays: dict[str, np.ndarray]):
    """The fitted ``cls`` stored by :func:`child_state` under ``key`` in a parent's meta and arrays;
    ValueError naming ``key`` (and the field inside it) for a missing, malformed or other-kind child."""
    record = meta.get(key) if isinstance(meta, dict) else None
    if not isinstance(record, dict):
        raise ValueError(f"{key}: missing, or not a record" if record is None
                         else f"{key} must be a record; got {type(record).__name__}")
    for part in ("params", "meta"):
        if not isinstance(record.get(part), dict):
            raise ValueError(f"{key}.{part} must be an object; got {type(record.get(part)).__name__}")
    if record.get("kind") != cls.__name__:
        raise ValueError(f"{key} holds a {record.get('kind')!r}, not a {cls.__name__!r}")
    prefix = f"{key}."
    try:
        child = cls(**cls._params_from_json(record["params"]))
        child._restore_fitted_state(record["meta"], {name[len(prefix):]: array
                                                     for name, array in arrays.items()
                                                     if name.startswith(prefix)})
    except KeyError as err:
        raise ValueError(f"{key}: missing field {err}") from None
    except (TypeError, ValueError) as err:
        raise ValueError(f"{key}: {' '.join(str(err).split())}") from None
    return child
