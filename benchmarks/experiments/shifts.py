"""Experiment 4: distribution shift on real images. The comparison's methods and a family of CNN
variants train on one class-balanced subset of the training images; each is tested on a fixed
class-balanced subset of the clean test images and on the same images under every shifted set
(:mod:`tangentless.benchmarks.corruptions`: CIFAR-10-C corruptions x severities, translations,
rotations, the JPEG shift). Per shift, per corruption family and over all corruptions: accuracy,
drop, the logit-linear fit over the CNN family with bootstrap intervals (:mod:`.robustness`), every
model's effective robustness with its interval, and mCA / relative mCE against a named reference
model.

The methods select their hyperparameters on the training images only (:mod:`.selection`); the
family members are trained at fixed settings (``FamilyMember``), their spread in width and
budget is what gives the fit its range. Every record holds the model's per-image correctness
(packed bits), so the analysis is recomputed from the file alone. Resumable: a restart skips the
models already evaluated.

A costly method (the kernel: T n pairs per shifted set) can run on its own, on fewer test images
or severities, with the family and the other models taken from an earlier run on the same test
images and shifted sets (``reuse``): their per-image correctness is restricted to this run's
images and sets, after checking that both runs saw identical images (:func:`reused_records`).
"""
from __future__ import annotations

import base64
import dataclasses
import json
import pathlib
import time

import numpy as np
from tqdm.auto import tqdm

from ...kernels._shared.digest import sha256
from ..corruptions import CORRUPTIONS, FAMILIES, load_shifted_set
from ..datasets import balanced_subset
from ..report import data_label, markdown_table, plot_robustness, selection_table
from . import robustness
from .methods import METHODS, all_params, describe, make_estimator
from .selection import default_grids, select_and_fit
from .store import ResultStore, write_results

NAME = "shifts"
#: where the kernel's ZCA is fitted (part of a run's checksum: runs that whitened otherwise are refused)
KERNEL_WHITENING = "ZCA (per bias) fitted on all the training images given, labels unused"


@dataclasses.dataclass(frozen=True)
class FamilyMember:
    """One model of the reference family: ``method`` (by default "cnn" or "resnet") with
    parameter changes, trained without selection."""
    method: str
    changes: tuple[tuple[str, object], ...]

    @property
    def name(self) -> str:
        return f"{self.method} " + ", ".join(f"{k}={v}" for k, v in self.changes)


#: the default family: ResNet-9 at three widths and the Myrtle5 network at two, each at two budgets
DEFAULT_FAMILY = tuple(
    [FamilyMember("resnet", (("width", w), ("epochs", e))) for w in (0.0625, 0.125, 0.25) for e in (10, 40)]
    + [FamilyMember("cnn", (("width", w), ("epochs", e))) for w in (16, 32) for e in (20, 80)])


@dataclasses.dataclass
class ShiftsConfig:
    """n: class-balanced training images; methods: among ``METHODS`` (hyperparameters selected
    on the training images); family: the reference CNNs (fixed settings); shifts: names of the
    shifted sets in the folder (None: all there); severities: the severities evaluated (1..5; the
    JPEG shift has one); test_size: class-balanced subset of the test images, shared by every
    shifted set; reference: the model the mCE is relative to (a method name or a family member's
    name); replicates: bootstrap resamples; seed: subsets, initializations, bootstrap."""
    n: int = 500
    methods: tuple[str, ...] = METHODS
    family: tuple[FamilyMember, ...] = DEFAULT_FAMILY
    shifts: tuple[str, ...] | None = None
    severities: tuple[int, ...] = (1, 2, 3, 4, 5)
    test_size: int | None = None
    reference: str = "resnet"
    replicates: int = 1000
    seed: int = 0
    params: dict = dataclasses.field(default_factory=all_params)
    grids: dict = dataclasses.field(default_factory=lambda: default_grids(METHODS))


def _pack(correct: np.ndarray) -> str:
    return base64.b64encode(np.packbits(correct.astype(bool))).decode()


def _unpack(text: str, n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(base64.b64decode(text), np.uint8))[:n].astype(bool)


def _shifted_sets(folder: pathlib.Path, names, severities, test_index: np.ndarray,
                  test_labels: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """{"<shift>@<severity>" (or "jpeg"): images (T, 32, 32, 3)} of the test subset, matched by
    the test images' official indices, and {shift: its file's SHA-256}; ValueError where a set
    lacks an image or disagrees on a label."""
    sets, checksums = {}, {}
    for name in names:
        images, labels, index, record = load_shifted_set(folder, name)
        checksums[name] = record["file_sha256"]
        position = {int(k): i for i, k in enumerate(index)}
        missing = [int(k) for k in test_index if int(k) not in position]
        if missing:
            raise ValueError(f"shifted set {name!r} lacks test images of official index {missing[:5]}")
        rows = np.array([position[int(k)] for k in test_index])
        if np.any(labels[rows] != test_labels):
            raise ValueError(f"shifted set {name!r} disagrees with the test set's labels")
        if images.shape[0] == 1:
            sets[name] = images[0, rows]
        else:
            for s in severities:
                sets[f"{name}@{s}"] = images[s - 1, rows]
    return sets, checksums


def _models(config: ShiftsConfig, family: bool = True) -> list[dict]:
    models = [{"name": m, "method": m, "role": "method", "changes": {}} for m in config.methods]
    models += [{"name": f.name, "method": f.method, "role": "family", "changes": dict(f.changes)}
               for f in (config.family if family else ())]
    return models


def _restrict(record: dict, rows: np.ndarray, n_source: int, keys: list[str]) -> dict:
    """A record's correctness and accuracy on the given rows of its test images and sets."""
    correct = {k: _unpack(record["correct"][k], n_source)[rows] for k in ["clean", *keys]}
    return {"accuracy": {k: float(v.mean()) for k, v in correct.items()},
            "correct": {k: _pack(v) for k, v in correct.items()}}


def reused_records(source: str | pathlib.Path, exclude, test: tuple[np.ndarray, np.ndarray, np.ndarray],
                   test_index: np.ndarray, sets: list[str], checksums: dict[str, str]
                   ) -> tuple[dict, list[dict]]:
    """The records of an earlier run's results file ``source`` (all but the names in
    ``exclude``), restricted to this run's test images (official indices ``test_index``) and
    ``sets``; with the source's payload. ``test``: all test images, labels and official indices,
    from which the source's test images are rebuilt and checked against its checksum;
    ``checksums``: this run's shifted files' SHA-256, which must equal the source's. ValueError
    names the first difference (another experiment, other test images, other shifted files, a
    missing image or set)."""
    source = pathlib.Path(source)
    try:
        payload = json.loads(source.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot reuse {source}: not a readable results file ({err})") from None
    if not isinstance(payload, dict) or payload.get("experiment") != NAME:
        raise ValueError(f"cannot reuse {source}: not a results file of the {NAME} experiment")
    missing = [k for k in ("test_index", "test_sha256", "set_checksums", "checksum") if k not in payload]
    if missing:
        raise ValueError(f"cannot reuse {source}: it has no {', '.join(missing)} (written by an "
                         "older version: rerun its command, which resumes and adds them)")
    for name, digest in checksums.items():
        if payload["set_checksums"].get(name) != digest:
            raise ValueError(f"cannot reuse {source}: its shifted set {name!r} is not this run's file "
                             f"(SHA-256 {payload['set_checksums'].get(name)} vs {digest})")
    test_x, test_y, index = test
    by_index = {int(k): i for i, k in enumerate(index)}
    source_index = [int(k) for k in payload["test_index"]]
    if any(k not in by_index for k in source_index):
        raise ValueError(f"cannot reuse {source}: it was tested on images not in this test set")
    rows = np.array([by_index[k] for k in source_index])
    if sha256({}, test_x[rows], test_y[rows]) != payload["test_sha256"]:
        raise ValueError(f"cannot reuse {source}: its test images differ from this run's")
    position = {k: i for i, k in enumerate(source_index)}
    absent = [int(k) for k in test_index if int(k) not in position]
    if absent:
        raise ValueError(f"cannot reuse {source}: it lacks test images of official index {absent[:5]}")
    unknown = [k for k in sets if k not in payload["sets"]]
    if unknown:
        raise ValueError(f"cannot reuse {source}: it has no results on {', '.join(unknown[:5])}")
    keep = np.array([position[int(k)] for k in test_index])
    records = [{**{k: v for k, v in r.items() if k not in ("accuracy", "correct", "session")},
                **_restrict(r, keep, len(source_index), sets),
                "reused": {"from": source.name, "checksum": payload["checksum"], "n": payload["n"]}}
               for r in payload["records"] if r["name"] not in exclude]
    return payload, records


def run(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray, np.ndarray],
        shifted: str | pathlib.Path, config: ShiftsConfig, out: str | pathlib.Path, *,
        data: str = "", reuse: str | pathlib.Path | None = None, progress: bool = True) -> dict:
    """Train, test on the clean and every shifted set, analyze; write ``out/shifts.{json,md}`` and
    one plot per corruption family. train: (images, labels); test: (images, labels, official
    indices), the images the shifted sets in folder ``shifted`` were made from. ``reuse``: an
    earlier run's ``shifts.json`` on the same test images and shifted files, whose family and
    other models are taken (restricted to this run's images and sets) instead of training a
    family (:func:`reused_records`)."""
    shifted, out = pathlib.Path(shifted), pathlib.Path(out)
    names = config.shifts or tuple(sorted(p.stem for p in shifted.glob("*.json")))
    if not names:
        raise ValueError(f"no shifted sets in {shifted} (make them with `tangentless shifts`)")
    if len(config.family) < 2 and reuse is None:
        raise ValueError("the logit fit needs a family of at least 2 CNNs")
    test_x, test_y, test_index = test
    keep = (np.arange(len(test_y)) if config.test_size is None
            else balanced_subset(test_y, config.test_size, seed=config.seed))
    test_x, test_y, test_index = test_x[keep], test_y[keep], np.asarray(test_index)[keep]
    sets, checksums = _shifted_sets(shifted, names, config.severities, test_index, test_y)
    subset = balanced_subset(train[1], config.n, seed=config.seed)
    train_x, train_y = train[0][subset], train[1][subset]
    params = {m: config.params[m] for m in METHODS}
    grids = {m: config.grids.get(m, {}) for m in METHODS}
    models = _models(config, family=reuse is None)
    methods = {m["name"]: describe(m["method"], {**params[m["method"]], **m["changes"]},
                                   grids[m["method"]] if m["role"] == "method" else None)
               for m in models}
    source, reused = {}, []
    if reuse is not None:
        source, reused = reused_records(reuse, set(methods), test, test_index, list(sets), checksums)
        if sum(r["role"] == "family" for r in reused) < 2:
            raise ValueError(f"cannot reuse {reuse}: it holds fewer than 2 family models")
        methods.update({r["name"]: source["methods"][r["name"]] for r in reused})
    header = {"experiment": NAME, "data": data, "n": config.n, "test_size": len(test_y),
              "test_index": [int(k) for k in test_index], "test_sha256": sha256({}, test_x, test_y),
              "sets": list(sets), "set_checksums": checksums, "severities": list(config.severities),
              "reference": config.reference, "replicates": config.replicates, "seed": config.seed,
              "methods": methods,
              **({"kernel_whitening": f"{KERNEL_WHITENING}: {len(train[0])} images"}
                 if "kernel" in config.methods else {}),
              **({"reused": {"from": str(reuse), "checksum": source["checksum"],
                                                 "n": source["n"]}} if reuse else {})}
    store = ResultStore(out / f"{NAME}.json", ("name",), header,
                        sha256({"params": params, "grids": grids, "models": models,
                                "seed": config.seed, "n": config.n, "sets": list(sets),
                                **({"reused": source["checksum"]} if reuse else {}),
                                **({"kernel_whitening": KERNEL_WHITENING} if "kernel" in config.methods else {})},
                               train_x, train_y, test_x, test_y, *sets.values()))
    for record in reused:
        if not store.done(name=record["name"]):
            store.add(record)
    for model in tqdm([m for m in models if not store.done(name=m["name"])], desc="shift models",
                      disable=not progress):
        method = model["method"]
        if model["role"] == "method":
            estimator, _, selection, fit_seconds = select_and_fit(
                method, params[method], grids[method], train_x, train_y, seed=config.seed,
                whitening_images=train[0], progress=progress)
        else:
            tic = time.perf_counter()
            estimator = make_estimator(method, {**params[method], **model["changes"]}, len(train_y),
                                       random_state=config.seed).fit(train_x, train_y)
            selection, fit_seconds = None, time.perf_counter() - tic
        done = store.payload.get("partial", {}).get(model["name"], {})   # sets of an interrupted run
        correct = {k: _unpack(v, len(test_y)) for k, v in done.get("correct", {}).items()}
        seconds = done.get("predict_seconds", 0.0)
        todo = [(k, x) for k, x in [("clean", test_x), *sets.items()] if k not in correct]
        for key, images in tqdm(todo, desc=model["name"], leave=False, disable=not progress):
            tic = time.perf_counter()
            correct[key] = estimator.predict(images) == test_y
            seconds += time.perf_counter() - tic
            _save_partial(store, model["name"], {"correct": {k: _pack(v) for k, v in correct.items()},
                                                 "predict_seconds": seconds})
        store.add({**model, "fit_seconds": round(fit_seconds, 3),
                   "predict_seconds": round(seconds, 3),
                   **({"selection": selection} if selection else {}),
                   "accuracy": {k: float(correct[k].mean()) for k in ["clean", *sets]},
                   "correct": {k: _pack(correct[k]) for k in ["clean", *sets]}})
        _save_partial(store, model["name"], None)
    return write_outputs(store, out)


def _save_partial(store: ResultStore, name: str, progress: dict | None) -> None:
    """Keep a model's finished sets (its per-image correctness) in the file's ``partial`` field as
    they finish, so that an interrupted run refits the model (deterministic) but predicts only the
    sets not yet done; ``None`` clears it once the model's record is stored."""
    partial = {k: v for k, v in store.payload.get("partial", {}).items() if k != name}
    store.update(partial={**partial, **({name: progress} if progress is not None else {})})


def _groups(sets: list[str]) -> dict[str, list[str]]:
    """Per shift, per corruption family and over all 15 corruptions: the set keys pooled."""
    groups: dict[str, list[str]] = {}
    for key in sets:
        groups.setdefault(key.split("@")[0], []).append(key)
    for family, members in FAMILIES.items():
        keys = [k for k in sets if k.split("@")[0] in members]
        if keys:
            groups[f"family: {family}"] = keys
    corruption_keys = [k for k in sets if k.split("@")[0] in CORRUPTIONS]
    if corruption_keys:
        groups["all corruptions"] = corruption_keys
    return groups


def analyze(payload: dict) -> dict:
    """Fits, effective robustness with intervals and corruption errors from the records."""
    records = sorted(payload["records"], key=lambda r: (r["role"] != "method", r["name"]))
    n, sets = payload["test_size"], payload["sets"]
    family = [i for i, r in enumerate(records) if r["role"] == "family"]
    if len(records) < 2 or len(family) < 2:
        return {"groups": {}, "corruption": {}, "corruptions": [], "models": [r["name"] for r in records],
                "by_model": {}}
    clean = np.stack([_unpack(r["correct"]["clean"], n) for r in records])
    shifted = {k: np.stack([_unpack(r["correct"][k], n) for r in records]) for k in sets}
    groups = {}
    for group, keys in _groups(sets).items():
        pooled = np.stack([shifted[k] for k in keys], axis=1)
        try:
            result = robustness.bootstrap_effective_robustness(
                clean, pooled, family, paired=True, replicates=payload["replicates"],
                seed=payload["seed"])
        except ValueError as err:   # e.g. family members tied on the clean images: no line
            result = {"no_fit": str(err),
                      "accuracy_orig": clean.mean(axis=1).tolist(),
                      "accuracy_new": pooled.reshape(len(pooled), -1).mean(axis=1).tolist()}
        groups[group] = {"sets": keys, **result}
    corruption = {}
    severities = payload["severities"]
    present = [c for c in CORRUPTIONS if all(f"{c}@{s}" in shifted for s in severities)]
    keys = [[f"{c}@{s}" for s in severities] for c in present]
    if keys:
        errors = {r["name"]: np.array([[1 - r["accuracy"][k] for k in row] for row in keys])
                  for r in records}
        clean_error = {r["name"]: 1 - r["accuracy"]["clean"] for r in records}
        ref = payload["reference"]
        for r in records:
            name = r["name"]
            entry = {"mca": robustness.mean_corruption_accuracy(errors[name])}
            if ref in errors:
                try:
                    entry["relative_mce"] = robustness.relative_mce(errors[name], clean_error[name],
                                                                    errors[ref], clean_error[ref])
                except ValueError as err:   # the reference does not degrade somewhere: undefined
                    entry["relative_mce_undefined"] = str(err)
                entry["mce"] = robustness.mce(errors[name], errors[ref])
            corruption[name] = entry
    names = [r["name"] for r in records]
    return {"groups": groups, "corruption": corruption, "corruptions": present, "models": names,
            "by_model": _by_model(names, clean.mean(axis=1), groups, corruption)}


def _by_model(names: list[str], clean: np.ndarray, groups: dict, corruption: dict) -> dict:
    """Per model (the report's rows): clean accuracy, mCA / relative mCE and, per group, the
    effective robustness with its interval; the same numbers as ``groups`` and ``corruption``,
    arranged by model."""
    return {name: {"clean": float(clean[i]), **corruption.get(name, {}),
                   "effective_robustness": {
                       group: {"rho": g["rho"][i], "interval": g["rho_interval"][i]}
                       for group, g in groups.items() if "rho" in g}}
            for i, name in enumerate(names)}


def corruption_scope(analysis: dict) -> str:
    """'Over the 15 corruptions', or which of them where a run used fewer."""
    present = analysis.get("corruptions", CORRUPTIONS)
    if len(present) == len(CORRUPTIONS):
        return f"Over the {len(CORRUPTIONS)} corruptions"
    missing = sorted(set(CORRUPTIONS) - set(present))
    return f"Over {len(present)} of the {len(CORRUPTIONS)} corruptions (without {', '.join(missing)})"


def _interval(lo_hi) -> str:
    return f"[{100 * lo_hi[0]:+.1f}, {100 * lo_hi[1]:+.1f}]"


def write_outputs(source: ResultStore | dict, out: str | pathlib.Path) -> dict:
    """Analysis, Markdown and one plot per corruption family (and per other shift) of a store."""
    out = pathlib.Path(out)
    payload = write_results(source, out / f"{NAME}.json", lambda p: {"analysis": analyze(p)})
    analysis = payload["analysis"]
    names = analysis["models"]
    lines = [f"# Distribution shift: {data_label(payload)}\n",
             f"Trained on {payload['n']} class-balanced training images; tested on "
             f"{payload['test_size']} class-balanced test images and the same images under each "
             f"shifted set (severities {', '.join(map(str, payload['severities']))}). Methods "
             "select their hyperparameters on the training images only; the CNN family is "
             "trained at fixed settings and defines the logit fit. Intervals: "
             f"{payload['replicates']}-resample percentile bootstrap over test images, 95%.\n"]
    if payload.get("caveat"):
        lines.append(f"**Caveat:** {payload['caveat']}\n")
    records = {r["name"]: r for r in payload["records"]}
    reused = sorted(name for name, r in records.items() if "reused" in r)
    if reused:
        source = payload["reused"]
        lines.append(f"Reused from {source['from']} (trained there on {source['n']} images, "
                     "results restricted to these test images and sets): "
                     f"{', '.join(reused)}.\n")
    trained_on = (f"n = {payload['n']}" if not reused else
                  f"n = {payload['n']} (reused models: {payload['reused']['n']})")
    if analysis["corruption"]:
        ref = payload["reference"]
        rows = []
        g = analysis["groups"]["all corruptions"]
        for i, name in enumerate(names):
            c = analysis["corruption"][name]
            rho = ["n/a", "n/a"] if "no_fit" in g else [f"{100 * g['rho'][i]:+.1f}",
                                                        _interval(g["rho_interval"][i])]
            rows.append([name, records[name]["role"], f"{100 * records[name]['accuracy']['clean']:.1f}",
                         f"{100 * c['mca']:.1f}", f"{c.get('relative_mce', float('nan')):.2f}", *rho])
        lines.append(f"## {corruption_scope(analysis)}\n\n" + markdown_table(
            ["model", "role", "clean %", "mCA %", f"relative mCE (vs {ref})", "eff. robustness",
             "95% interval"], rows))
    for group, g in analysis["groups"].items():
        if "no_fit" in g:
            lines.append(f"## {group}\n\nNo fit over the family: {g['no_fit']}.\n")
            continue
        rows = [[name, f"{100 * g['accuracy_orig'][i]:.1f}", f"{100 * g['accuracy_new'][i]:.1f}",
                 f"{100 * g['rho'][i]:+.1f}", _interval(g["rho_interval"][i])]
                for i, name in enumerate(names)]
        lines.append(f"## {group}\n\nFit over the family: b1 = {g['b1']:.3f} "
                     f"[{g['b1_interval'][0]:.3f}, {g['b1_interval'][1]:.3f}], b0 = {g['b0']:.3f} "
                     f"[{g['b0_interval'][0]:.3f}, {g['b0_interval'][1]:.3f}], residual std "
                     f"{g['residual_std']:.3f} (logit units).\n\n" + markdown_table(
                         ["model", "clean %", "shifted %", "eff. robustness", "95% interval"], rows))
        if group.startswith("family: ") or group in ("jpeg", "translate", "rotate", "all corruptions"):
            points = [{"name": name, "orig": g["accuracy_orig"][i], "new": g["accuracy_new"][i],
                       "role": records[name]["role"]} for i, name in enumerate(names)]
            slug = group.replace("family: ", "").replace(" ", "_")
            plot_robustness(points, out / f"{NAME}_{slug}.png", g["b1"], g["b0"],
                            new_label=f"accuracy under {group.replace('family: ', '')}", title=f"{group}: clean vs shifted, {trained_on}, "
                                  f"{payload['test_size']} test images")
    selections = [r for r in payload["records"] if "selection" in r]
    if selections:
        lines.append("## Hyperparameter selection (training data only)\n\n"
                     + selection_table([{**r, "n": payload["n"]} for r in selections]))
    lines.append(markdown_table(["model", "configuration"], [[m, d] for m, d in payload["methods"].items()]))
    (out / f"{NAME}.md").write_text("\n".join(lines))
    return payload

