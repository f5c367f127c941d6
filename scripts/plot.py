"""Learning curves of DSRL runs: one metric against environment steps, mean and 95% band over seeds.

    python scripts/plot.py runs/robomimic_can/multirun_*/*_seed* --out docs/figures/can
    python scripts/plot.py runs/can/* --metric eval/return_mean --out docs/figures/can_return \\
        --group "DSRL-NA=runs/can/*dsrl_na*" --group "DSRL-SAC=runs/can/*dsrl_sac*"
    python scripts/plot.py runs/hopper/* --metric eval/return_mean --reference "base policy=469" --out hopper
    python scripts/plot.py runs/lift/* --show-seeds --out lift   # each seed's whole curve too
    python scripts/plot.py runs/can/* --baselines --out can      # with the base policy the runs evaluated
    python scripts/plot.py runs/can/* --max-steps 30000 --out can_30k   # runs of different lengths, up to 30k

Each RUN_DIR is a directory a run wrote (``train_dsrl.py`` or ``dsrl.training.run``).
Its metrics are read from ``progress.csv``; a run without one is read from its
TensorBoard events (``events.out.tfevents.*``), and a run with neither from its
offline W&B files (``wandb/offline-run-*/run-*.wandb``). The x axis is
``train/env_steps`` (simulator steps) of the same record.

Curves: each ``--group LABEL=GLOB`` is one curve of the RUN_DIRs (as written on
the command line) that GLOB matches (fnmatch: ``*`` also matches ``/``); every
RUN_DIR must match a group. Without ``--group``, runs with the same algorithm and
env.name in their ``config.yaml`` (or ``.hydra/config.yaml``) form one curve, and
a run with neither file is a curve of its own.

Several seeds of a curve are interpolated onto the union of their evaluation
steps inside the range they all cover (from the latest first evaluation to the
earliest last one) and drawn as their mean with a 95% Student-t interval
(mean ± t(0.975, n-1) · std / sqrt(n)); the y axis spans the seeds' values, so
the wide band of two or three seeds may be cut at its edges. With
``--show-seeds`` each seed's own curve is drawn too, thin and faint in its
curve's colour, over all of its evaluations (a seed that ran longer than the
others shows where it went). Each ``--reference LABEL=VALUE`` is a grey
horizontal line, dashed, dotted, then dash-dotted in turn (the base policy
alone); ``--baselines`` adds one per noise scale at which the runs evaluated the
base policy before training (``eval.base_policy_noise_scales``), the mean over
the runs. Writes OUT.png and OUT.svg and prints, per curve, the final value: the
mean ± 95% t-interval over seeds of each seed's last evaluation.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import glob
import itertools
import math
import os
from typing import Callable, Iterable

import numpy as np
import yaml
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import stats

ENV_STEPS = "train/env_steps"
REFERENCE_STYLES = ("--", ":", "-.")
"""Line styles of the --reference lines, in turn."""
Series = dict[str, tuple[np.ndarray, np.ndarray]]
"""Metric name -> (env steps, values), sorted by env step."""


def to_series(records: Iterable[dict[str, float]]) -> Series:
    """Per metric, the env steps and values of the records that carry ``train/env_steps``."""
    points: dict[str, list[tuple[float, float]]] = {}
    for record in records:
        if ENV_STEPS in record:
            for key, value in record.items():
                points.setdefault(key, []).append((record[ENV_STEPS], value))
    series = {}
    for key, pairs in points.items():
        pairs.sort(key=lambda pair: pair[0])
        steps, values = zip(*pairs)
        series[key] = (np.array(steps, dtype=float), np.array(values, dtype=float))
    return series


def csv_records(path: str) -> list[dict[str, float]]:
    """The rows of an SB3 ``progress.csv`` without their empty cells."""
    with open(path, newline="") as f:
        return [{key: float(value) for key, value in row.items() if key and value} for row in csv.DictReader(f)]


def tensorboard_records(run_dir: str) -> list[dict[str, float]]:
    """The records of a run's TensorBoard events; SB3 writes each dump at one event step."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    events = EventAccumulator(run_dir, size_guidance={SCALARS: 0})
    events.Reload()
    records: dict[int, dict[str, float]] = {}
    for tag in events.Tags()["scalars"]:
        for event in events.Scalars(tag):
            records.setdefault(event.step, {})[tag] = event.value
    return list(records.values())


def wandb_history_records(paths: list[str]) -> list[dict[str, float]]:
    """The numeric entries of the history rows of offline W&B run files, in order."""
    from dsrl.run_logging import read_wandb_run

    return [
        {
            key: float(value)
            for key, value in row.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)
        }
        for path in paths
        for row in read_wandb_run(path)[1]
    ]


def read_run(run_dir: str) -> Series:
    """A run's metrics, from progress.csv, else its TensorBoard events, else its offline W&B files.

    :raises ValueError: ``run_dir`` holds none of them
    """
    csv_path = os.path.join(run_dir, "progress.csv")
    if os.path.isfile(csv_path):
        return to_series(csv_records(csv_path))
    if glob.glob(os.path.join(run_dir, "events.out.tfevents.*")):
        return to_series(tensorboard_records(run_dir))
    wandb_files = sorted(glob.glob(os.path.join(run_dir, "wandb", "offline-run-*", "run-*.wandb")))
    if wandb_files:
        return to_series(wandb_history_records(wandb_files))
    raise ValueError(
        f"{run_dir!r} is not a run directory: it has no progress.csv, no events.out.tfevents.* "
        "and no wandb/offline-run-*/run-*.wandb"
    )


def metric_of(run_dir: str, series: Series, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """The env steps and values of ``metric`` in a run.

    :raises ValueError: the run never logged it (the message lists its eval/* and train/* metrics)
    """
    if metric not in series:
        available = sorted(k for k in series if k.startswith(("eval/", "train/")))
        raise ValueError(
            f"{run_dir!r} has no metric {metric!r}; its eval/* and train/* metrics: {', '.join(available)}"
        )
    return series[metric]


def up_to(run_dir: str, steps: np.ndarray, values: np.ndarray, max_steps: float) -> tuple[np.ndarray, np.ndarray]:
    """The evaluations at or before ``max_steps``; a ValueError naming the run if there are none."""
    kept = steps <= max_steps
    if not kept.any():
        raise ValueError(
            f"{run_dir!r} has no evaluation at or before --max-steps {max_steps:g} (its first: {steps[0]:g})"
        )
    return steps[kept], values[kept]


def config_label(run_dir: str) -> str | None:
    """``"<algorithm> <env.name>"`` from the run's config.yaml or .hydra/config.yaml, None without either."""
    for name in ("config.yaml", os.path.join(".hydra", "config.yaml")):
        path = os.path.join(run_dir, name)
        if os.path.isfile(path):
            with open(path) as f:
                config = yaml.safe_load(f)
            return f"{config['algorithm']} {config['env']['name']}"
    return None


def group_paths(paths: list[str], groups: list[str], default_label: Callable[[str], str]) -> dict[str, list[str]]:
    """Label -> its paths, from ``LABEL=GLOB`` rules (fnmatch), or without rules by ``default_label(path)``.

    :raises ValueError: a malformed rule, a rule matching no path, or a path matching no rule
    """
    labelled: dict[str, list[str]] = {}
    if not groups:
        for path in paths:
            labelled.setdefault(default_label(path), []).append(path)
        return labelled
    for rule in groups:
        label, separator, pattern = rule.partition("=")
        if not separator or not label or not pattern:
            raise ValueError(f"--group {rule!r} is not LABEL=GLOB")
        labelled[label] = [path for path in paths if fnmatch.fnmatch(path, pattern)]
        if not labelled[label]:
            raise ValueError(f"--group {rule!r} matches none of {paths}")
    grouped = {path for members in labelled.values() for path in members}
    unmatched = [path for path in paths if path not in grouped]
    if unmatched:
        raise ValueError(f"{unmatched} match no --group")
    return labelled


def t_interval(values: np.ndarray) -> np.ndarray:
    """Half-width of the 95% Student-t interval of the mean over the first axis (NaN for one row)."""
    n = len(values)
    if n < 2:
        return np.full(values.shape[1:], np.nan)
    return stats.t.ppf(0.975, n - 1) * values.std(axis=0, ddof=1) / math.sqrt(n)


def common_grid(seeds: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Seeds' curves interpolated onto the union of their steps inside the range all of them cover.

    :return: the grid of env steps and the values, one row per seed
    :raises ValueError: the seeds' step ranges do not overlap
    """
    start, end = max(steps[0] for steps, _ in seeds), min(steps[-1] for steps, _ in seeds)
    grid = np.unique(np.concatenate([steps for steps, _ in seeds]))
    grid = grid[(grid >= start) & (grid <= end)]
    if not len(grid):
        raise ValueError(
            f"the seeds' evaluations do not overlap in env steps (latest start {start}, earliest end {end})"
        )
    return grid, np.stack([np.interp(grid, steps, values) for steps, values in seeds])


def parse_references(rules: list[str]) -> dict[str, float]:
    """``LABEL=VALUE`` rules as {label: value}."""
    references = {}
    for rule in rules:
        label, _, value = rule.rpartition("=")
        try:
            references[label] = float(value)
        except ValueError:
            label = ""
        if not label:
            raise ValueError(f"--reference {rule!r} is not LABEL=NUMBER")
    return references


def baseline_references(run_dirs: list[str], metric: str) -> dict[str, float]:
    """The base policy alone, as logged before training (``eval.base_policy_noise_scales``), as references.

    Per noise scale, the mean over the runs that logged it of its
    ``base_policy/noise_x<S>/<name>``, where ``metric`` is ``eval/<name>`` or
    ``eval/stochastic_<name>`` (the base policy's noise is always sampled).

    :raises ValueError: ``metric`` is not an eval/* metric, or no run logged the base policy
    """
    from dsrl.evaluation import BASE_POLICY_PREFIX

    if not metric.startswith("eval/"):
        raise ValueError(f"--baselines needs an eval/* metric, not {metric!r}")
    name = metric.removeprefix("eval/").removeprefix("stochastic_")
    values: dict[str, list[float]] = {}
    for run_dir in run_dirs:
        for key, (_, logged) in read_run(run_dir).items():
            if key.startswith(BASE_POLICY_PREFIX):
                scale, _, logged_name = key.removeprefix(BASE_POLICY_PREFIX).partition("/")
                if logged_name == name:
                    values.setdefault(scale, []).append(logged[0])
    if not values:
        raise ValueError(
            f"--baselines: none of the runs logged {BASE_POLICY_PREFIX}<S>/{name} (train with "
            "eval.base_policy_noise_scales=[1.0,0.5] to log the base policy alone before training)"
        )
    return {
        f"base policy, noise x{scale} (mean of {len(runs)} runs)": float(np.mean(runs))
        for scale, runs in sorted(values.items(), key=lambda item: -float(item[0]))
    }


def plot(
    curves: dict[str, list[str]],
    metric: str,
    out: str,
    references: dict[str, float] | None = None,
    show_seeds: bool = False,
    max_steps: float = np.inf,
) -> Figure:
    """Draw each curve's seed mean and 95% band, save ``out``.png and .svg, print each curve's final value.

    ``references`` are drawn as grey horizontal lines of ``REFERENCE_STYLES``
    in turn (e.g. the base policy alone); with ``show_seeds`` each seed's whole
    curve is a thin unlabelled line in its curve's colour. Only evaluations at
    or before ``max_steps`` env steps are read (each curve's final value is then
    its last one there). The y axis spans the seeds' own values, each curve's
    printed final mean and the references: a wider band (few seeds) is cut at
    its edges. Seeds that share a single evaluation step are drawn as a point.
    """
    figure = Figure(figsize=(6, 4), dpi=150, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    drawn = []
    for label, run_dirs in curves.items():
        seeds = [up_to(run_dir, *metric_of(run_dir, read_run(run_dir), metric), max_steps) for run_dir in run_dirs]
        grid, values = common_grid(seeds)
        mean = values.mean(axis=0)
        marker = "o" if len(grid) == 1 else None  # seeds that share one evaluation step: a point, not a line
        (line,) = axes.plot(grid, mean, marker=marker, label=f"{label} (n={len(seeds)})")
        if len(seeds) > 1:
            half = t_interval(values)
            axes.fill_between(grid, mean - half, mean + half, color=line.get_color(), alpha=0.2, linewidth=0)
        drawn.append(values.ravel())
        if show_seeds:
            for steps, ys in seeds:
                axes.plot(steps, ys, color=line.get_color(), linewidth=0.8, alpha=0.4, label="_seed")
                drawn.append(ys)
        finals = np.array([ys[-1] for _, ys in seeds])
        drawn.append(np.array([finals.mean()]))
        last_steps = [int(steps[-1]) for steps, _ in seeds]
        interval = f"± {t_interval(finals):.4f} (95% t-interval)" if len(seeds) > 1 else "(one seed, no interval)"
        print(
            f"{label}: final {metric} = {finals.mean():.4f} {interval}, {len(seeds)} seed(s), "
            f"last evaluations at env steps {min(last_steps)}-{max(last_steps)}"
        )
    draw_references(axes, references or {})
    drawn.extend(np.array([value]) for value in (references or {}).values())
    low, high = min(v.min() for v in drawn), max(v.max() for v in drawn)
    margin = 0.05 * (high - low) or 0.05 * max(abs(high), 1.0)
    axes.set_ylim(low - margin, high + margin)
    axes.set_xlabel("environment steps")
    axes.set_ylabel(metric)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small", framealpha=0.6)
    save_figure(figure, out)
    return figure


def draw_references(axes: Axes, references: dict[str, float]) -> None:
    """Each reference as a grey horizontal line labelled ``LABEL (VALUE)``, in ``REFERENCE_STYLES`` in turn.

    The label rounds VALUE to two decimals (a mean over runs, 0.306667, reads 0.31); the line keeps it exact.
    """
    for (label, value), style in zip(references.items(), itertools.cycle(REFERENCE_STYLES)):
        axes.axhline(value, linestyle=style, color="0.4", linewidth=1, label=f"{label} ({round(value, 2):g})")


def save_figure(figure: Figure, out: str) -> None:
    """Write ``out``.png and ``out``.svg (making ``out``'s directory), naming each."""
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    for path in (f"{out}.png", f"{out}.svg"):
        figure.savefig(path)
        print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories (one per seed)")
    parser.add_argument("--metric", default="eval/success_rate", help="metric to plot (default: eval/success_rate)")
    parser.add_argument("--out", required=True, help="output path without extension: writes OUT.png and OUT.svg")
    parser.add_argument(
        "--group", action="append", default=[], metavar="LABEL=GLOB", help="one curve of the runs matching GLOB"
    )
    parser.add_argument(
        "--reference",
        action="append",
        default=[],
        metavar="LABEL=VALUE",
        help='a horizontal line, e.g. "base policy=469"',
    )
    parser.add_argument("--show-seeds", action="store_true", help="also draw each seed's whole curve, thin")
    parser.add_argument(
        "--max-steps",
        type=float,
        default=np.inf,
        help="read only evaluations at or before this many env steps (runs of different lengths over a common range)",
    )
    parser.add_argument(
        "--baselines",
        action="store_true",
        help="also draw, as references, the base policy alone that the runs evaluated before training "
        "(eval.base_policy_noise_scales): per noise scale, the mean over the runs",
    )
    args = parser.parse_args()
    run_dirs = [os.path.normpath(run_dir) for run_dir in args.run_dirs]
    try:
        references = parse_references(args.reference)
        if args.baselines:
            references.update(baseline_references(run_dirs, args.metric))
        curves = group_paths(run_dirs, args.group, lambda run_dir: config_label(run_dir) or run_dir)
        plot(curves, args.metric, args.out, references, show_seeds=args.show_seeds, max_steps=args.max_steps)
    except ValueError as error:
        raise SystemExit(f"plot.py: error: {error}") from error


if __name__ == "__main__":
    main()
