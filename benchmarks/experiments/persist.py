"""The model files of ``tangentless fit`` / ``tangentless predict``: one .npz of plain arrays plus a
JSON record (:mod:`tangentless.kernels._shared.persist`, no pickle) holding the method's name and
parameters and, nested under ``"model"``, the fitted estimator's own saved state (what its
``save`` writes). The method names the estimator class that reads it back
(:data:`.methods.ESTIMATORS`)."""
from __future__ import annotations

import pathlib

from ...kernels._shared.nested import child_state, restore_child
from ...kernels._shared.persist import ModelFileError, load_state, malformed, save_state
from .methods import ESTIMATORS, method_params

#: the kind of file :func:`save_model` writes
KIND = "tangentless-method"


def save_model(path: str | pathlib.Path, method: str, params: dict, model) -> pathlib.Path:
    """Write a fitted model of ``method`` (from :func:`.methods.make_estimator`, with the method's
    ``params``) to ``path`` (.npz), atomically."""
    meta, arrays = child_state("model", model)
    return save_state(path, KIND, {"method": method, "params": params}, meta, arrays)


def load_model(path: str | pathlib.Path) -> tuple[str, dict, object]:
    """(method, params, fitted estimator) from a file written by :func:`save_model`;
    FileNotFoundError for a missing file, :class:`ModelFileError` for any other file."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such model file: {path}")
    record, meta, arrays = load_state(path, KIND)
    try:
        method = record["method"]
        if method not in ESTIMATORS:
            raise ValueError(f"method must be one of {', '.join(ESTIMATORS)}; got {method!r}")
        if not isinstance(record["params"], dict):
            raise ValueError(f"params must be an object; got {record['params']!r}")
        params = method_params(method, **record["params"])
        return method, params, restore_child(ESTIMATORS[method], "model", meta, arrays)
    except (KeyError, TypeError, ValueError) as err:
        raise malformed(path, KIND, err) from None
