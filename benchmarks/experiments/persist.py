"""Fitted models saved without pickle: one .npz of plain arrays plus a JSON string ``config``
(``{"format", "method", "params"}``), loaded with ``allow_pickle=False``."""
from __future__ import annotations

import json
import pathlib
import zipfile

import numpy as np

from .methods import FORMAT, METHODS, kernel_spec, make_estimator
from ...kernels._shared.atomic import atomic_write


def _ridge_arrays(ridge) -> dict:
    return {"coef": ridge.coef_, "offset": ridge.offset_, "classes": ridge.classes_,
            "alpha": np.float64(ridge.alpha_)}


def _restore_ridge(arrays: dict, alphas):
    """A fitted KernelRidgeClassifier from its saved coefficients (n_train, c)."""
    from tangentless.solvers import KernelRidgeClassifier

    ridge = KernelRidgeClassifier(alphas=tuple(alphas))
    ridge.coef_, ridge.offset_, ridge.classes_ = arrays["coef"], arrays["offset"], arrays["classes"]
    ridge.alpha_, ridge.centers_ = float(arrays["alpha"]), None
    ridge.n_features_in_ = len(arrays["coef"])
    return ridge


def _network_tree(params: dict, n_classes: int, image_shape):
    """The (params, state) pytree structure of a freshly initialized network."""
    import jax

    from ..cnn import build_network

    init, _ = build_network(params["arch"], params["width"], n_classes)
    return jax.tree_util.tree_structure(init(jax.random.PRNGKey(0), tuple(image_shape)))


def model_arrays(method: str, model) -> dict:
    """The arrays that determine a fitted model's predictions."""
    if method == "kernel":
        return {"zca_whitening": model.zca_.whitening_, "train_images": model.train_images_,
                **_ridge_arrays(model.ridge_)}
    if method == "scattering":
        return {"mean": model.mean_, "scale": model.scale_, "train_rows": model.train_rows_,
                **_ridge_arrays(model.ridge_)}
    import jax

    leaves = jax.tree_util.tree_leaves((model.params_, model.state_))
    return {"classes": model.classes_, "image_shape": np.asarray(model.image_shape_),
            "standardization_mean": model.standardization_["mean"],
            "standardization_std": model.standardization_["std"],
            **{f"leaf_{i:04d}": np.asarray(leaf) for i, leaf in enumerate(leaves)}}


def save_model(path: str | pathlib.Path, method: str, params: dict, model) -> pathlib.Path:
    """Write a fitted model (from :func:`make_estimator`) to ``path`` (.npz), atomically."""
    path = pathlib.Path(path)
    config = json.dumps({"format": FORMAT, "method": method, "params": params})
    return atomic_write(path, lambda f: np.savez(f, config=np.array(config),
                                                 **model_arrays(method, model)))


def load_model(path: str | pathlib.Path) -> tuple[str, dict, object]:
    """(method, params, fitted estimator) from a file written by :func:`save_model`."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such model file: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
        config = json.loads(str(arrays.pop("config")))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path} is not a tangentless model file ({type(err).__name__}: {err})") from None
    if config.get("format") != FORMAT or config.get("method") not in METHODS:
        raise ValueError(f"{path} is not a {FORMAT} model file (config {config})")
    method, params = config["method"], config["params"]
    model = make_estimator(method, params, n_train=1)
    if method == "kernel":
        from tangentless.kernels import ZCAWhitening

        model.spec_ = kernel_spec(params)
        model.zca_ = ZCAWhitening(bias=params["zca_bias"])
        model.zca_.whitening_ = arrays["zca_whitening"]
        model.zca_.n_features_in_ = len(arrays["zca_whitening"])
        model.zca_.input_shape_ = arrays["train_images"].shape[1:]
        model.train_images_ = arrays["train_images"]
        model.ridge_ = _restore_ridge(arrays, params["alphas"])
    elif method == "scattering":
        model.mean_, model.scale_ = arrays["mean"], arrays["scale"]
        model.train_rows_ = arrays["train_rows"]
        model.ridge_ = _restore_ridge(arrays, params["alphas"])
    else:
        import jax

        image_shape = tuple(int(s) for s in arrays["image_shape"])
        tree = _network_tree(params, len(arrays["classes"]), image_shape)
        leaves = [arrays[name] for name in sorted(arrays) if name.startswith("leaf_")]
        if len(leaves) != tree.num_leaves:
            raise ValueError(f"{path} holds {len(leaves)} network arrays; a {params['arch']} of "
                             f"width {params['width']} has {tree.num_leaves}")
        model.params_, model.state_ = jax.tree_util.tree_unflatten(tree, leaves)
        model.standardization_ = {"mean": arrays["standardization_mean"],
                                  "std": arrays["standardization_std"]}
        model.image_shape_ = image_shape
    model.classes_ = arrays["classes"]
    return method, params, model
