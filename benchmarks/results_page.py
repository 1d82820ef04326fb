"""The results page: ``benchmarks/results/results.{json,md}`` from the experiments' own results
files (small-data protocol, architectures, accuracy against compute, distribution shift,
quickstart), stating data,
trials, grids, budgets and machine for each, and which runs are complete. It reads what is there
(partial runs included, marked as such) and computes nothing but summaries::

    python -m tangentless.benchmarks.results_page [--results benchmarks/results]
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

from ..kernels.layout import BlockLayout
from .experiments.small_data import RIDGE_METHODS, method_descriptions, pool_phrase
from .experiments.shifts import corruption_scope
from .report import (data_label, machine_line, machines_line, markdown_table, percent, selection_table,
                     summarize, write_json)

#: the kernel paper's small-data target of ask 1: at these n the kernel's network may trail
#: ResNet-9 x1/8 by at most its own standard deviation
NETWORK_TARGET_MIN_N = 80


def _load(path: pathlib.Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _machine(payload: dict) -> str:
    return machine_line(payload.get("machine", {}))


def network_target(summary: list[dict], min_n: int = NETWORK_TARGET_MIN_N) -> list[dict]:
    """Per n >= ``min_n`` where both ran: the kernel's network ("cnn") against ResNet-9 x1/8
    ("resnet"): ``gap`` = resnet mean - cnn mean (fractions), ``cnn_std``, ``met`` = gap <= cnn_std
    (None where the cnn has one trial)."""
    rows = {(r["method"], r["n"]): r for r in summary}
    out = []
    for (method, n), cnn in sorted(rows.items(), key=lambda kv: kv[0][1]):
        if method != "cnn" or n < min_n or ("resnet", n) not in rows:
            continue
        gap = rows["resnet", n]["mean"] - cnn["mean"]
        out.append({"n": n, "cnn": cnn["mean"], "resnet": rows["resnet", n]["mean"], "gap": gap,
                    "cnn_std": cnn["std"], "trials": [cnn["trials"], rows["resnet", n]["trials"]],
                    "met": None if cnn["std"] is None else bool(gap <= cnn["std"])})
    return out


def requested_trials(payload: dict) -> dict[tuple[str, int], int]:
    """{(method, n): trials} that the runs into a small-data file asked for (the most any
    session's request named; sessions without a request yet are skipped), at most one for a
    ridge method at n = the pool size, where its trials coincide."""
    wanted: dict[tuple[str, int], int] = {}
    pool_size = payload.get("config", {}).get("pool_size")
    for session in payload.get("sessions", []):
        request = session.get("request")
        if not request:
            continue
        for n, trials in zip(request["sizes"], request["trials"]):
            for method in request["methods"]:
                asked = min(trials, 1) if method in RIDGE_METHODS and n == pool_size else trials
                wanted[method, n] = max(wanted.get((method, n), 0), asked)
    return wanted


def _last_asked(payload: dict) -> dict[tuple[str, int], str]:
    """{(method, n): the date (YYYY-MM-DD) of the last session whose request named it}."""
    return {(method, n): session.get("date", "")[:10]
            for session in payload.get("sessions", []) if session.get("request")
            for n in session["request"]["sizes"] for method in session["request"]["methods"]}


def store_progress(folder: pathlib.Path) -> list[dict]:
    """The Gram stores under ``folder`` (``gram-*/*.zarr``) and how far each is: finished
    blocks (markers) of all blocks, from the files alone (nothing is verified or computed)."""
    rows = []
    for store in sorted(folder.glob("gram-*/*.zarr")):
        config = json.loads((store / "zarr.json").read_text())["attributes"]["tangentless"]
        layout = BlockLayout(*config["shape"], *config["block_shape"], config["symmetric"],
                             config["flip"])
        done = len(list((store / "tangentless" / "done").glob("*-*.json")))
        rows.append({"store": str(store.relative_to(folder)), "shape": config["shape"],
                     "flip": config["flip"], "zca": config["preprocessing"].get("zca_bias"),
                     "blocks_done": done, "blocks": len(layout.pairs)})
    return rows


def _cell(row: dict | None, wanted: int | None, asked: str = "") -> str:
    """A table cell: mean ± std (trials), and where fewer trials than a request asked for, that
    request (its date where known: a run in progress or stopped)."""
    when = f" {asked}" if asked else ""
    if row is None:
        return f"asked{when}: 0 of {wanted} trials done" if wanted else "not run yet"
    text = f"{percent(row['mean'], row['std'])} ({row['trials']})"
    return text if not wanted or row["trials"] >= wanted else f"{text}, {wanted} asked{when}"


def _small_data_section(payload: dict) -> tuple[str, dict]:
    summary = summarize(payload["records"])
    config = payload["config"]
    wanted = requested_trials(payload)
    sizes = sorted({r["n"] for r in summary} | {n for _, n in wanted})
    methods = list(dict.fromkeys([r["method"] for r in summary] + [m for m, _ in wanted]))
    cells = {(r["method"], r["n"]): r for r in summary}
    asked = _last_asked(payload)
    table = markdown_table(["n"] + methods, [
        [n] + [_cell(cells.get((m, n)), wanted.get((m, n)), asked.get((m, n), "")) for m in methods]
        for n in sizes])
    stores = store_progress(payload["_path"].parent)
    store_table = markdown_table(["store", "shape", "flip", "ZCA bias", "blocks done"], [
        [r["store"].split("/", 1)[1], f"{r['shape'][0]} x {r['shape'][1]}", r["flip"], r["zca"],
         f"{r['blocks_done']} of {r['blocks']}"] for r in stores])
    target = network_target(summary)
    target_table = markdown_table(
        ["n", "Myrtle5 network %", "ResNet-9 x1/8 %", "gap (points)", "network std (points)",
         "trials (net, resnet)", "target met"],
        [[t["n"], f"{100 * t['cnn']:.1f}", f"{100 * t['resnet']:.1f}", f"{100 * t['gap']:+.1f}",
          "n/a" if t["cnn_std"] is None else f"{100 * t['cnn_std']:.1f}",
          f"{t['trials'][0]}, {t['trials'][1]}",
          "n/a" if t["met"] is None else ("yes" if t["met"] else "no")] for t in target])
    folder = payload["_path"].parent.name
    text = (f"## Small-data protocol ({data_label(payload)}, `{folder}/`)\n\n"
            f"A {pool_phrase(config['pool_size'], payload.get('pool_class_counts'))} (seed "
            f"{config['seed']}), fixed test set of {config['test_size']} images; trials draw nested "
            "class-balanced subsets of the pool (at n = pool size every trial uses the whole pool and only the "
            "networks' initialization and augmentation differ). Test accuracy %, mean ± sample "
            "std (trials). A cell with fewer trials than asked names the date of the request: a "
            "run in progress, or one stopped before it finished (it resumes).\n\n"
            + table + (("\n### The kernel's network against ResNet-9 x1/8 (target: gap <= the "
                        f"network's std at n >= {NETWORK_TARGET_MIN_N})\n\n"
                        + (target_table if target else "No n >= 80 with both networks yet.\n"))
                       if {"cnn", "resnet"} & set(methods) else "")
            + ("\n### The kernel's matrices (resumable stores; a trial needs every grid point's "
               "pool matrix)\n\n" + store_table if stores else "")
            + "\n### Selection (training data only)\n\n" + selection_table(payload["records"])
            + "\n### Budgets\n\n" + markdown_table(["method", "configuration"], [
                [m, line] for m, line in method_descriptions(payload).items()])
            + f"\n{machines_line(payload)} Plots: `{folder}/small_data.png` (accuracy "
            f"against n), `{folder}/small_data_cost.png` (accuracy against cost seconds).\n")
    return text, {"summary": summary, "network_target": target, "config": config,
                  "requested": [{"method": m, "n": n, "trials": t} for (m, n), t in wanted.items()],
                  "kernel_stores": stores}


def _architectures_section(payload: dict) -> tuple[str, dict]:
    rows = payload["rows"]
    r = payload["pearson_r"]
    table = markdown_table(["architecture", "kernel error %", "network error % (trials)"], [
        [row["arch"], f"{100 * row['kernel_error']:.1f}",
         f"{percent(row['network_error'], row['network_error_std'])} ({row['network_trials']})"]
        for row in rows])
    text = (f"## Network against kernel across architectures ({data_label(payload)})\n\n"
            f"Myrtle5 / 7 / 10 kernels (no flips, ZCA bias and alpha by leave-one-out) and their "
            f"networks (lr and epochs on a hold-out) on the same {rows[0]['n']} training images, "
            f"{payload['test_size']} test images. Pearson r of the errors across architectures: "
            + ("n/a" if r is None else f"{r:.2f}") + " (three points: descriptive).\n\n" + table
            + f"\nMachine: {_machine(payload)}. Plot: `architectures/architectures.png`.\n")
    return text, {"rows": rows, "pearson_r": r}


def _quickstart_section(payload: dict) -> tuple[str, dict]:
    table = markdown_table(["method", "accuracy %", "seconds", "configuration"], [
        [r["method"], f"{100 * r['accuracy']:.2f}", f"{r['seconds']:.1f}", r["configuration"]]
        for r in payload["results"]])
    return (f"## Quickstart ({data_label(payload)})\n\n" + table
            + f"\nMachine: {_machine(payload)}.\n"), {"results": payload["results"]}


def _full_data_section(payload: dict) -> tuple[str, dict]:
    path = payload["_path"].with_suffix(".md")
    title = f"## Accuracy against compute ({data_label(payload)})\n"
    if not path.exists():   # the run writes its report when it finishes
        return (title + f"\nNot finished: {len(payload['records'])} (method, n) record(s) so far, "
                "no report yet (rerunning the same command resumes it).\n"), {"records": payload["records"]}
    return (title + path.read_text().split("\n", 1)[1]
            + "\nPlot: `full_data/full_data.png`.\n"), {"records": payload["records"]}


#: the groups of the distribution-shift summary, in order (others in the file are left to its report)
SHIFT_GROUPS = ("all corruptions", "family: noise", "family: blur", "family: weather",
                "family: digital", "jpeg", "translate", "rotate")


def _effective_robustness(group: dict, i: int) -> str:
    lo, hi = group["rho_interval"][i]
    return f"{100 * group['rho'][i]:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def beyond_interval(group: dict, names: list[str], roles: dict[str, str]) -> dict[str, list[str]]:
    """The methods (not family members) of one group of the analysis whose effective robustness
    is beyond both its own interval and the family's spread: interval wholly above zero and point
    estimate above every family member's ("above"), or wholly below zero and below every
    member's ("below"). The interval resamples test images only; the family's own residuals say
    how far from the line a CNN lands by its width and budget alone."""
    family = [group["rho"][i] for i, name in enumerate(names) if roles[name] == "family"]
    out: dict[str, list[str]] = {"above": [], "below": []}
    for i, name in enumerate(names):
        if roles[name] == "method":
            lo, hi = group["rho_interval"][i]
            if lo > 0 and group["rho"][i] > max(family):
                out["above"].append(name)
            elif hi < 0 and group["rho"][i] < min(family):
                out["below"].append(name)
    return out


def _verdict_line(lead: str, verdicts: dict[str, dict[str, list[str]]], n_methods: int,
                  unit: str) -> str:
    """One sentence naming the (method, group) pairs above and below the fit by
    :func:`beyond_interval`, with how many of its 95% intervals would cross zero by chance."""
    above = sorted({f"{m} ({group})" for group, v in verdicts.items() for m in v["above"]})
    below = sorted({f"{m} ({group})" for group, v in verdicts.items() for m in v["below"]})
    return (f"{lead}: " + (", ".join(above) if above else "none") + ". Below the fit beyond its "
            "interval and below every member: " + (", ".join(below) if below else "none")
            + f" ({n_methods} methods x {len(verdicts)} {unit}, each at 95%: about "
            f"{0.05 * n_methods * len(verdicts):.1f} would cross zero by chance alone).")


def _shifts_section(payload: dict) -> tuple[str, dict]:
    title = f"## Distribution shift: `{payload['_path'].parent.name}` ({data_label(payload)})\n"
    if "analysis" not in payload:       # a run under way writes its analysis when it finishes
        done = [r["name"] for r in payload.get("records", [])]
        return (f"{title}\nIn progress: "
                f"{len(done)} models stored ({', '.join(done) or 'none'}); the analysis is "
                "written when the run finishes (rerun its command to resume).\n"), {"in_progress": done}
    analysis, records = payload["analysis"], {r["name"]: r for r in payload["records"]}
    if payload.get("caveat"):
        title += f"\n**Caveat:** {payload['caveat']}\n"
    names = analysis["models"]
    roles = {name: records[name]["role"] for name in names}
    groups = {g: analysis["groups"][g] for g in SHIFT_GROUPS
              if g in analysis["groups"] and "no_fit" not in analysis["groups"][g]}
    reused = payload.get("reused")
    lines = [title,
             f"Trained on {payload['n']} class-balanced training images"
             + (f" (the models reused from `{reused['from']}`: {reused['n']})" if reused else "")
             + f"; {payload['test_size']} class-balanced test images under every shifted set, "
             f"severities {', '.join(map(str, payload['severities']))}. Effective robustness: "
             "the shifted accuracy minus the logit-linear fit over the CNN family at the model's "
             f"clean accuracy, in points, with the {payload['replicates']}-resample paired "
             "bootstrap 95% interval over test images. Methods select their hyperparameters on "
             "their training images only; the family is trained at fixed settings.\n"]
    corruption = analysis["corruption"]
    if corruption:
        g = analysis["groups"].get("all corruptions", {})
        rows = [[name, roles[name], percent(records[name]["accuracy"]["clean"]),
                 percent(corruption[name]["mca"]),
                 f"{corruption[name].get('relative_mce', float('nan')):.2f}",
                 _effective_robustness(g, i) if "rho" in g else "n/a"]
                for i, name in enumerate(names)]
        lines.append(f"{corruption_scope(analysis)}:\n\n" + markdown_table(["model", "role", "clean %", "mCA %",
                                     f"relative mCE (vs {payload['reference']})",
                                     "eff. robustness, all corruptions"], rows))
    methods = [i for i, name in enumerate(names) if roles[name] == "method"]
    if groups:
        family = [i for i, name in enumerate(names) if roles[name] == "family"]
        spread = ["family spread", *(f"{100 * min(g['rho'][i] for i in family):+.1f} .. "
                                     f"{100 * max(g['rho'][i] for i in family):+.1f}" for g in groups.values())]
        lines.append("Effective robustness of the methods per shift group (points, 95% interval), "
                     "and the range of the family members' own:\n\n"
                     + markdown_table(["method", *groups], [
                         [names[i], *(_effective_robustness(g, i) for g in groups.values())]
                         for i in methods] + [spread]))
    per_shift = {g: v for g, v in analysis["groups"].items()
                 if g not in SHIFT_GROUPS and not g.startswith("family:") and "no_fit" not in v}
    verdicts = {group: beyond_interval(g, names, roles) for group, g in groups.items()}
    shift_verdicts = {group: beyond_interval(g, names, roles) for group, g in per_shift.items()}
    lines.append(_verdict_line("Effective robustness beyond its interval and above every family "
                               "member's", verdicts, len(methods), "groups") + "\n")
    lines.append(_verdict_line("Per shift (each corruption on its own, its severities together)",
                               shift_verdicts, len(methods), "shifts")
                 + f"\n\n{machines_line(payload)} "
                 f"Full report and plots: `{payload['_path'].parent.name}/shifts.md`.\n")
    return "\n".join(lines), {"verdicts": verdicts, "shift_verdicts": shift_verdicts,
                              "corruption": corruption,
                              "clean": {n: records[n]["accuracy"]["clean"] for n in names}}


SECTIONS = [("quickstart", "quickstart/quickstart.json", _quickstart_section),
            ("small_data", "small_data/small_data.json", _small_data_section),
            ("architectures", "architectures/architectures.json", _architectures_section),
            ("full_data", "full_data/full_data.json", _full_data_section),
            ("shifts", "shifts/shifts.json", _shifts_section)]


def _sections(results: pathlib.Path) -> list[tuple]:
    """:data:`SECTIONS`, then one section per further ``small_data_*`` folder (the protocol with
    another pool, e.g. the kernel's own or all training images) and per further ``shifts_*``
    folder (runs of a costly method that reuse the main run's family, e.g. the kernel's)."""
    extra = [(path.parent.name, f"{path.parent.name}/{path.name}", section)
             for pattern, section in (("small_data_*/small_data.json", _small_data_section),
                                      ("shifts_*/shifts.json", _shifts_section))
             for path in sorted(results.glob(pattern))]
    return SECTIONS + extra


def write_page(results: str | pathlib.Path) -> dict:
    """Write ``results/results.{json,md}`` from the results files found; return the JSON."""
    results = pathlib.Path(results)
    parts, texts = {}, []
    for name, relative, section in _sections(results):
        payload = _load(results / relative)
        if payload is None:
            texts.append(f"## {name}\n\nNo results file ({relative}) yet.\n")
            continue
        payload["_path"] = results / relative
        text, part = section(payload)
        texts.append(text)
        parts[name] = {**part, "file": relative, "machine": payload.get("machine")}
    write_json(results / "results.json", {"page": "tangentless results", "sections": parts})
    (results / "results.md").write_text(
        "# tangentless: results\n\nEvery number below is measured on the machine it names, "
        "from the results file it cites; every method selects its hyperparameters on its "
        "training images only. Rerunning the commands in each section resumes or extends "
        "the run.\n\n" + "\n".join(texts))
    return parts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=pathlib.Path, default=pathlib.Path("benchmarks/results"),
                        help="the results folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    if not args.results.is_dir():
        parser.error(f"no such folder: {args.results}")
    write_page(args.results)
    print((args.results / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
