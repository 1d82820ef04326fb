"""Experiment reports from plain dicts: JSON with the machine description, Markdown tables, and
matplotlib figures (accuracy vs training-set size; original vs re-collected test accuracy).

Figures are drawn on a bare :class:`matplotlib.figure.Figure` (Agg canvas), so nothing here touches
pyplot's global backend.
"""
from __future__ import annotations

import collections
import json
import pathlib
import re
import textwrap

import numpy as np
from matplotlib.figure import Figure

from ..kernels._shared.atomic import atomic_write
from .machine import describe_machine


def write_json(path: str | pathlib.Path, payload: dict) -> pathlib.Path:
    """Write ``payload`` as indented JSON, atomically (a crash never leaves a half-written file).
    Adds ``machine`` (:func:`describe_machine`) unless the payload already has one."""
    payload = payload if "machine" in payload else {**payload, "machine": describe_machine()}
    text = json.dumps(payload, indent=2, default=_plain) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode()))


def _plain(value):
    """JSON fallback for numpy scalars and numpy or JAX arrays."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray) or hasattr(value, "__array__"):   # numpy or JAX arrays
        array = np.asarray(value)
        return array.item() if array.ndim == 0 else array.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def summarize(records: list[dict]) -> list[dict]:
    """Group trial records ``{"method", "n", "accuracy", "seconds", ...}`` by (method, n).

    Returns one row per group, ordered by method (first appearance) then n:
    ``{"method", "n", "trials", "mean", "std", "accuracies", "seconds", "cost_seconds"}``; std is
    the sample standard deviation (ddof=1), None for a single trial; seconds is the mean per trial,
    cost_seconds the mean of the records' ``cost_seconds`` (their ``seconds`` where they have none).
    """
    groups: dict[tuple[str, int], list[dict]] = {}
    for record in records:
        groups.setdefault((record["method"], int(record["n"])), []).append(record)
    methods = list(dict.fromkeys(record["method"] for record in records))
    rows = []
    for method, n in sorted(groups, key=lambda key: (methods.index(key[0]), key[1])):
        group = sorted(groups[method, n], key=lambda r: r.get("trial", 0))
        accuracies = np.array([r["accuracy"] for r in group], dtype=np.float64)
        rows.append({
            "method": method, "n": n, "trials": len(group),
            "mean": float(accuracies.mean()),
            "std": float(accuracies.std(ddof=1)) if len(group) > 1 else None,
            "accuracies": accuracies.tolist(),
            "seconds": float(np.mean([r["seconds"] for r in group])),
            "cost_seconds": float(np.mean([r.get("cost_seconds", r["seconds"]) for r in group])),
        })
    return rows


#: vector extensions from the widest down, as named in a machine line (AMX, matrix tiles that
#: NumPy and numba do not use here, comes with AVX-512)
_WIDEST_VECTORS = (("amx_tile", "AVX-512 + AMX"), ("avx512f", "AVX-512"), ("avx2", "AVX2"),
                   ("avx", "AVX"), ("sve", "SVE"), ("asimd", "NEON"))


def machine_line(machine: dict) -> str:
    """'AMD EPYC (AVX-512), 2 cores, 23.5 GiB' from a :func:`describe_machine` record: with the
    widest vector extension where the record lists them (machines of one model name differ in
    it, and with it their speed and, through NumPy's SIMD paths, some computed bytes)."""
    flags = set(machine.get("cpu_vector_extensions", ()))
    widest = next((name for flag, name in _WIDEST_VECTORS if flag in flags), None)
    return (f"{machine.get('cpu', '?')}{f' ({widest})' if widest else ''}, "
            f"{machine.get('cpu_count', '?')} cores, {machine.get('memory_gib', '?')} GiB")


def machines_line(payload: dict) -> str:
    """'Machine: ...' (:func:`machine_line`) of the sessions whose records a results payload
    holds (each record's ``session`` index into ``sessions``), or, where they ran on machines
    that differ, each of them: seconds compare only within one machine."""
    sessions = payload.get("sessions", [])
    lines = sorted({machine_line(sessions[r["session"]]) for r in payload.get("records", [])
                    if isinstance(r.get("session"), int) and r["session"] < len(sessions)}
                   or {machine_line(payload.get("machine", {}))})
    if len(lines) == 1:
        return f"Machine: {lines[0]}."
    return f"Machines (seconds compare only within one): {'; '.join(lines)}."


def data_label(payload: dict) -> str:
    """The data a run used, as its results file says; a bare folder path (files written before runs
    described their data) shortened to its last part, so that no report names a folder of the
    machine it ran on."""
    data = str(payload.get("data", ""))
    return pathlib.PurePath(data).name if re.fullmatch(r"[\w./~-]+", data) else data


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A GitHub Markdown table; cells are converted with ``str``."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def percent(mean: float, std: float | None = None) -> str:
    """0.4567, 0.0123 -> '45.67 ± 1.23' (percent); without std just '45.67'."""
    text = f"{100 * mean:.2f}"
    return text if std is None else f"{text} ± {100 * std:.2f}"


def accuracy_table(summary: list[dict]) -> str:
    """Markdown table of :func:`summarize` rows: one row per n, one column per method, cells
    'mean ± std (trials)' in percent and the mean seconds per trial."""
    methods = list(dict.fromkeys(row["method"] for row in summary))
    cells = {(row["method"], row["n"]): row for row in summary}
    rows = []
    for n in sorted({row["n"] for row in summary}):
        line = [n]
        for method in methods:
            row = cells.get((method, n))
            line.append("-" if row is None else
                        f"{percent(row['mean'], row['std'])} ({row['trials']}), {row['seconds']:.1f} s")
        rows.append(line)
    return markdown_table(["n"] + [f"{m}: acc % (trials), s/trial" for m in methods], rows)


def _trial_points(ax, rows: list[dict], x: list[float], y: list[float], color: str, label: str) -> None:
    """One method's line through its points: error bars of one standard deviation over trials, a
    hollow marker without bars where a point is a single trial; the legend gives the trial counts."""
    trials = sorted({r["trials"] for r in rows})
    counts = f"{trials[0]}" if len(trials) == 1 else f"{trials[0]}-{trials[-1]}"
    ax.plot(x, y, color=color, lw=1, label=f"{label} ({counts} trial{'' if trials == [1] else 's'})")
    for r, xi, yi in zip(rows, x, y):
        if r["std"] is None:
            ax.scatter(xi, yi, facecolors="none", edgecolors=color, zorder=3)
        else:
            ax.errorbar(xi, yi, yerr=100 * r["std"], color=color, marker="o", capsize=3)


def _chance_and_title(ax, chance: float | None, title: str, width: int) -> None:
    if chance is not None:
        ax.axhline(100 * chance, color="k", ls="--", lw=1, label=f"chance ({100 * chance:g}%)")
    ax.set_title(textwrap.fill(title + "; hollow: a single trial, bars: std over trials", width),
                 fontsize="medium")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")


def accuracy_vs_n_figure(summary: list[dict], chance: float | None = None, title: str = "") -> Figure:
    """Test accuracy against the training-set size n (log x), one line per method, error bars of
    one standard deviation over trials, single-trial points hollow, the trial counts in the
    legend, a dashed line at ``chance`` accuracy; the title should state the budget."""
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.add_subplot()
    for i, method in enumerate(dict.fromkeys(row["method"] for row in summary)):
        rows = sorted((r for r in summary if r["method"] == method), key=lambda r: r["n"])
        _trial_points(ax, rows, [r["n"] for r in rows], [100 * r["mean"] for r in rows], f"C{i % 10}", method)
    sizes = sorted({row["n"] for row in summary})
    ax.set_xscale("log")
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.minorticks_off()
    ax.set_xlabel("training images n (class-balanced)")
    ax.set_ylabel("test accuracy (%)")
    _chance_and_title(ax, chance, title, 70)
    return fig


def plot_accuracy_vs_n(summary: list[dict], path: str | pathlib.Path, chance: float | None = None,
                       title: str = "") -> pathlib.Path:
    """PNG of :func:`accuracy_vs_n_figure`."""
    return _save(accuracy_vs_n_figure(summary, chance, title), path)


def _text(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _values(values: list) -> str:
    """Distinct values, most frequent first, with counts above 1: [0.1, 0.1, 0.03] -> '0.1 (2), 0.03'."""
    return ", ".join(_text(v) + (f" ({c})" if c > 1 else "")
                     for v, c in collections.Counter(values).most_common())


def selection_table(records: list[dict]) -> str:
    """Markdown table, one row per (method, n) of records with a ``selection`` (see
    :mod:`tangentless.benchmarks.experiments.selection`): the selection method (LOO, hold-out
    fraction, or none), the grid and its size, the chosen values over the trials (count of trials
    in parentheses where several chose one), how many trials saw a training diverge (its values
    then score nothing or give way, see the selection module) and the mean selection seconds."""
    groups: dict[tuple, list[dict]] = {}
    for record in records:
        if "selection" in record:
            groups.setdefault((record["method"], int(record["n"])), []).append(record["selection"])
    methods = list(dict.fromkeys(key[0] for key in groups))
    rows = []
    for method, n in sorted(groups, key=lambda key: (methods.index(key[0]), key[1])):
        group = groups[method, n]
        first = group[0]
        how = {"loo": "exact LOO", "none": f"none ({first.get('reason', '')})"}.get(
            first["method"], f"hold-out {first.get('holdout_fraction', 0):g} per class")
        diverged = sum(bool(s.get("diverged") or s.get("refit_diverged")) for s in group)
        if diverged:
            how += f"; training diverged at some values in {diverged} of {len(group)} trials"
        grid = "; ".join(f"{k}: {', '.join(_text(v) for v in vs)}"
                         for k, vs in first["grid"].items()) or "-"
        chosen = "; ".join(f"{name}: {_values([s['chosen'][name] for s in group])}"
                           for name in first["chosen"]) or "-"
        rows.append([method, n, how, first["grid_size"], grid, chosen,
                     f"{np.mean([s['seconds'] for s in group]):.2f}"])
    return markdown_table(["method", "n", "selection", "grid size", "grid", "chosen (trials)",
                           "selection s"], rows)


def plot_accuracy_vs_cost(summary: list[dict], path: str | pathlib.Path, chance: float | None = None,
                          title: str = "") -> pathlib.Path:
    """PNG of test accuracy against the cost seconds per trial (``cost_seconds``: fit + predict;
    log x), one line per method through its n (labelled), drawn as :func:`accuracy_vs_n_figure`
    draws its points."""
    fig = Figure(figsize=(7.2, 4.8), layout="constrained")
    ax = fig.add_subplot()
    for i, method in enumerate(dict.fromkeys(row["method"] for row in summary)):
        rows = sorted((r for r in summary if r["method"] == method), key=lambda r: r["n"])
        x = [max(r["cost_seconds"], 1e-4) for r in rows]
        y = [100 * r["mean"] for r in rows]
        color = f"C{i % 10}"
        _trial_points(ax, rows, x, y, color, method)
        for r, xi, yi in zip(rows, x, y):
            ax.annotate(str(r["n"]), (xi, yi), textcoords="offset points", xytext=(3, 3),
                        fontsize="x-small", color=color)
    ax.set_xscale("log")
    ax.set_xlabel("fit + predict seconds per trial (this machine; labels: n)")
    ax.set_ylabel("test accuracy (%)")
    _chance_and_title(ax, chance, title, 80)
    return _save(fig, path)


def plot_methods(results: list[dict], path: str | pathlib.Path, chance: float, title: str = "") -> pathlib.Path:
    """PNG of one fit per method (``results``: ``{"method", "accuracy", "seconds"}``, accuracy a
    fraction): test accuracy bars, each labelled with its accuracy and seconds, and the chance
    line; one trial each (no error bars: the title should say so)."""
    fig = Figure(figsize=(5.6, 3.6), layout="constrained")
    ax = fig.add_subplot()
    names = [r["method"] for r in results]
    accuracy = [100 * r["accuracy"] for r in results]
    bars = ax.bar(names, accuracy, color=[f"C{i % 10}" for i in range(len(results))])
    for bar, r in zip(bars, results):
        ax.annotate(f"{100 * r['accuracy']:.1f}%\n{r['seconds']:.0f} s",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                    va="bottom", fontsize="small")
    ax.axhline(100 * chance, color="k", ls="--", lw=1, label=f"chance ({100 * chance:g}%)")
    ax.set_ylim(0, 105)
    ax.set_ylabel("test accuracy %")
    ax.set_title(textwrap.fill(title, 70), fontsize="medium")
    ax.legend(fontsize="small", loc="lower right")
    return _save(fig, path)


def plot_robustness(models: list[dict], path: str | pathlib.Path, b1: float, b0: float,
                    title: str = "", new_label: str = "accuracy on the re-collected test set"
                    ) -> pathlib.Path:
    """PNG of new (re-collected or shifted, axis label ``new_label``) vs original test accuracy
    (``models``: ``{"name", "orig", "new"}``, fractions, and optionally ``"role": "family"`` for
    the models that define the fit, drawn alike in grey under one legend entry) on logit axes,
    where the fit logit(new) = b1 logit(orig) + b0 is a straight line; the dashed diagonal is new
    = orig (no drop)."""
    fig = Figure(figsize=(5.6, 5.0), layout="constrained")
    ax = fig.add_subplot()
    values = [m[key] for m in models for key in ("orig", "new")]
    low, high = max(min(values) / 2, 1e-3), min(1 - (1 - max(values)) / 2, 1 - 1e-3)
    grid = np.linspace(low, high, 200)
    ax.plot(grid, grid, "k--", lw=1, label="no drop (new = original)")
    fitted = 1 / (1 + np.exp(-(b1 * np.log(grid / (1 - grid)) + b0)))
    ax.plot(grid, fitted, color="0.3", lw=1.5, label=f"logit fit: b1 = {b1:.3f}, b0 = {b0:.3f}")
    family = [m for m in models if m.get("role") == "family"]
    if family:
        ax.scatter([m["orig"] for m in family], [m["new"] for m in family], color="0.6", marker="o",
                   s=22, zorder=2, label=f"CNN family ({len(family)}, defines the fit)")
    markers = "sD^vP*Xph"
    for i, model in enumerate(m for m in models if m.get("role") != "family"):
        ax.scatter(model["orig"], model["new"], color=f"C{i % 10}", marker=markers[i % len(markers)],
                   s=48, edgecolor="k", linewidth=0.5, zorder=3, label=model["name"])
    ticks = [t for t in (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98,
                         0.99) if low <= t <= high]
    labels = [f"{100 * t:g}%" for t in ticks]
    ax.set_xscale("logit")
    ax.set_yscale("logit")
    ax.set_xticks(ticks, labels)
    ax.set_yticks(ticks, labels)
    ax.minorticks_off()
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_xlabel("accuracy on the original test set")
    ax.set_ylabel(new_label)
    ax.set_title(textwrap.fill(title, 60), fontsize="medium")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, path)


def _save(fig, path) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def format_seconds(seconds: float) -> str:
    """A duration in its largest unit reached twice: 90 -> '90.0 s', 7300 -> '2.0 h', 2e6 -> '23.1 days'."""
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s"
