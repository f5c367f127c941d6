"""Summaries of many evaluations (``scripts/evaluate.py --json``): per group, each seed's value and their mean.

    python scripts/summarize_evaluations.py docs/results/lift/kl_to_base_noise/final_100_episodes/*.json \\
        --group "mean noise=*_mean.json" --group "sampled noise=*_sampled.json" \\
        --reference "base policy, noise x0.5=0.96" --out docs/figures/lift_kl_final_100_episodes

Each JSON is one evaluation (one trained seed, or one evaluation seed of a
base policy). Groups: each ``--group LABEL=GLOB`` takes the JSONs GLOB matches
(fnmatch, as in ``scripts/plot.py``); without ``--group`` JSONs of the same
mode, noise and config (or task, for agents evaluated in their runs' own
config.yaml) form one group. Prints, per group, every JSON's value
with its own 95% interval (the ``<metric>_ci95`` evaluate.py wrote) and the
mean over the group's JSONs with a 95% Student-t interval over them; with
``--out``, a scatter plot (OUT.png, OUT.svg) of the groups side by side: one
point per JSON with its interval, the group's mean as a black bar with its
t-interval, ``--reference LABEL=VALUE`` lines in grey.
"""

from __future__ import annotations

import argparse
import json
import os
import textwrap

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from plot import draw_references, group_paths, parse_references, save_figure, t_interval

from dsrl.settings import CONFIG

METRICS = ("success_rate", "return_mean")


def read_evaluation(path: str, metric: str) -> dict:
    """One ``evaluate.py --json`` file.

    :raises ValueError: it is not one, or it lacks ``metric`` (a task without success has no success_rate)
    """
    with open(path) as f:
        evaluation = json.load(f)
    if not isinstance(evaluation, dict) or "mode" not in evaluation:
        raise ValueError(f"{path!r} is not a scripts/evaluate.py --json file (no 'mode')")
    if metric not in evaluation:
        raise ValueError(f"{path!r} has no {metric!r}; it has {sorted(k for k in evaluation if k in METRICS)}")
    return evaluation


def evaluation_label(evaluation: dict) -> str:
    """What was evaluated, on which task: ``agent, sampled noise (dsrl_lift)``, ``base policy, noise x0.5 (...)``."""
    what = {
        "agent": f"agent, {evaluation.get('noise', 'mean')} noise",
        "base_policy": f"base policy, noise x{evaluation.get('noise_scale', 1.0):g}",
        "constant_noise": f"constant noise {evaluation.get('constant_noise', '')}".rstrip(),
    }.get(evaluation["mode"], evaluation["mode"])
    config = os.path.basename(evaluation.get("config", ""))
    task = evaluation["task"] if config == CONFIG else os.path.splitext(config)[0]  # a run's own config.yaml
    return f"{what} ({task})" if task else what


def summarize(groups: dict[str, list[str]], evaluations: dict[str, dict], metric: str) -> dict[str, dict]:
    """Per group of paths into ``evaluations`` (path -> read JSON): the values (n,), their own 95% half-widths
    (n,), the mean and its t half-width."""
    summaries = {}
    for label, paths in groups.items():
        values = np.array([evaluations[path][metric] for path in paths], dtype=float)
        own = np.array([evaluations[path].get(f"{metric}_ci95", np.nan) for path in paths], dtype=float)
        t95 = t_interval(values)
        summaries[label] = dict(paths=paths, values=values, own_ci95=own, mean=values.mean(), t95=t95)
        spread = f"± {t95:.4f} (95% t over {len(values)})" if len(values) > 1 else "(one, no interval)"
        print(f"{label}: mean {metric} {values.mean():.4f} {spread}")
        for path, value, half in zip(paths, values, own):
            print(f"  {value:.4f} ± {half:.4f}  {path}")
    return summaries


def scatter(summaries: dict[str, dict], metric: str, out: str, references: dict[str, float]) -> Figure:
    """One column per group: a point and error bar per JSON (jittered), the mean as a black bar with its
    t-interval; save ``out``.png and .svg."""
    figure = Figure(figsize=(max(4.0, 1.3 * len(summaries) + 1.5), 4.5), dpi=150, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for column, (label, summary) in enumerate(summaries.items()):
        n = len(summary["values"])
        x = column + np.linspace(-0.15, 0.15, n) if n > 1 else np.array([float(column)])
        axes.errorbar(x, summary["values"], yerr=summary["own_ci95"], fmt="o", capsize=3, alpha=0.8)
        axes.hlines(summary["mean"], column - 0.3, column + 0.3, color="black", linewidth=2)
        if n > 1:
            low, high = summary["mean"] - summary["t95"], summary["mean"] + summary["t95"]
            axes.fill_between([column - 0.3, column + 0.3], low, high, color="black", alpha=0.1, linewidth=0)
    draw_references(axes, references)
    ticks = [f"{textwrap.fill(label, 18)}\n(n={len(summary['values'])})" for label, summary in summaries.items()]
    axes.set_xticks(range(len(summaries)), ticks, fontsize=8)
    axes.set_xlim(-0.6, len(summaries) - 0.4)
    axes.set_ylabel(metric)
    axes.grid(alpha=0.3, axis="y")
    if references:
        axes.legend()
    save_figure(figure, out)
    return figure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("jsons", nargs="+", metavar="JSON", help="scripts/evaluate.py --json files")
    parser.add_argument("--metric", default="success_rate", choices=METRICS)
    parser.add_argument("--group", action="append", default=[], help="LABEL=GLOB: a group of the JSONs (repeatable)")
    parser.add_argument("--reference", action="append", default=[], help="LABEL=VALUE: a grey line (repeatable)")
    parser.add_argument("--out", default=None, help="output path without extension: writes OUT.png and OUT.svg")
    args = parser.parse_args()
    paths = [os.path.normpath(path) for path in args.jsons]
    try:
        references = parse_references(args.reference)
        evaluations = {path: read_evaluation(path, args.metric) for path in paths}
        groups = group_paths(paths, args.group, lambda path: evaluation_label(evaluations[path]))
        summaries = summarize(groups, evaluations, args.metric)
        if args.out:
            scatter(summaries, args.metric, args.out, references)
    except ValueError as error:
        raise SystemExit(f"summarize_evaluations.py: error: {error}") from error


if __name__ == "__main__":
    main()
