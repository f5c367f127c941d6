"""scripts/plot.py on two real (tiny) steering runs: figures, the printed final mean, other log sources, errors."""

import csv
import importlib.util
import math
import os
import re
import shutil
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest
from conftest import STEERING_CONFIG
from scipy import stats

from dsrl.config import REPO_ROOT, compose_task_config
from dsrl.training import run

PLOT = str(REPO_ROOT / "scripts" / "plot.py")
TINY = [
    "train.total_env_steps=1200",
    "eval.interval_env_steps=400",
    "eval.n_episodes=20",
    "eval.stochastic=false",
    "train.utd=1",
    "train.noise_critic_grad_steps=1",
    "train.layer_size=64",
    "progress_bar=false",
    "wandb.mode=offline",  # so the W&B reader has files to read
    "eval.base_policy_noise_scales=[1.0,0.5]",
]


def load_plot_module():
    spec = importlib.util.spec_from_file_location("plot", PLOT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def csv_evaluations(run_dir, metric="eval/success_rate"):
    """(env steps, value) of the evaluation rows of a run's progress.csv."""
    with open(os.path.join(run_dir, "progress.csv"), newline="") as f:
        return [(float(r["train/env_steps"]), float(r[metric])) for r in csv.DictReader(f) if r[metric]]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two DSRL-NA steering runs, seeds 0 and 1, with three evaluations each (a few seconds)."""
    root = tmp_path_factory.mktemp("runs")
    run_dirs = []
    for seed in (0, 1):
        run_dir = str(root / f"seed{seed}")
        run(compose_task_config(STEERING_CONFIG, [f"run_dir={run_dir}", f"seed={seed}", *TINY]))
        assert len(csv_evaluations(run_dir)) >= 2
        run_dirs.append(run_dir)
    return run_dirs


def test_two_seeds_make_one_curve_and_print_the_mean_of_their_last_evaluations(runs, tmp_path):
    out = tmp_path / "figures" / "steering"
    result = subprocess.run(
        [sys.executable, PLOT, *runs, "--metric", "eval/success_rate", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    png, svg = tmp_path / "figures" / "steering.png", tmp_path / "figures" / "steering.svg"
    assert f"wrote {png}" in result.stdout and f"wrote {svg}" in result.stdout
    assert png.stat().st_size > 0 and svg.stat().st_size > 0
    assert matplotlib.image.imread(png).shape == (600, 900, 4), "6x4 inches at 150 dpi, RGBA"
    assert "<svg" in svg.read_text()

    (line,) = [line for line in result.stdout.splitlines() if "final" in line]
    match = re.fullmatch(
        r"dsrl_na steering: final eval/success_rate = (\S+) ± (\S+) \(95% t-interval\), 2 seed\(s\), .*", line
    )
    assert match, line
    last = np.array([csv_evaluations(run_dir)[-1][1] for run_dir in runs])
    assert float(match[1]) == pytest.approx(last.mean(), abs=1e-4)
    assert float(match[2]) == pytest.approx(stats.t.ppf(0.975, 1) * last.std(ddof=1) / math.sqrt(2), abs=1e-4)


def test_tensorboard_and_wandb_files_give_the_csv_curves(runs, tmp_path):
    plot = load_plot_module()
    for run_dir in runs:
        copies = tmp_path / os.path.basename(run_dir)
        tensorboard_only, wandb_only = copies / "tensorboard_only", copies / "wandb_only"
        tensorboard_only.mkdir(parents=True)
        for name in os.listdir(run_dir):
            if name.startswith("events.out.tfevents."):
                shutil.copy(os.path.join(run_dir, name), tensorboard_only)
        shutil.copytree(os.path.join(run_dir, "wandb"), wandb_only / "wandb")
        for metric in ("eval/success_rate", "eval/return_mean"):
            steps, values = np.array(csv_evaluations(run_dir, metric)).T
            for copy in (tensorboard_only, wandb_only):
                read_steps, read_values = plot.read_run(str(copy))[metric]
                np.testing.assert_array_equal(read_steps, steps)
                np.testing.assert_allclose(read_values, values, atol=1e-6)  # TensorBoard keeps float32


def test_group_rules_make_one_curve_each(runs, tmp_path, monkeypatch, capsys):
    plot = load_plot_module()
    out = str(tmp_path / "grouped")
    monkeypatch.setattr(sys, "argv", ["plot.py", *runs, "--out", out, "--group", "A=*seed0", "--group", "B=*seed1"])
    plot.main()
    finals = re.findall(r"^(\w): final eval/success_rate = (\S+) \(one seed", capsys.readouterr().out, re.M)
    assert finals == [(label, f"{csv_evaluations(r)[-1][1]:.4f}") for label, r in zip("AB", runs)]
    assert os.path.getsize(out + ".png") > 0


def test_missing_metric_and_non_run_directory_fail_naming_the_path(runs, tmp_path, monkeypatch):
    plot = load_plot_module()
    monkeypatch.setattr(sys, "argv", ["plot.py", runs[0], "--metric", "eval/nope", "--out", str(tmp_path / "f")])
    message = rf"'{re.escape(runs[0])}' has no metric 'eval/nope'; its eval/\* and train/\* metrics: eval/return_mean, "
    with pytest.raises(SystemExit, match=message):
        plot.main()

    empty = tmp_path / "not_a_run"
    empty.mkdir()
    monkeypatch.setattr(sys, "argv", ["plot.py", str(empty), "--out", str(tmp_path / "f")])
    with pytest.raises(SystemExit, match=rf"'{re.escape(str(empty))}' is not a run directory: it has no progress.csv"):
        plot.main()
    assert not os.path.exists(tmp_path / "f.png")


def test_references_are_labelled_lines_of_their_own_styles_inside_the_y_range(runs, tmp_path, monkeypatch):
    plot = load_plot_module()
    references = plot.parse_references(["base policy=-0.5", "a=b=2", "mean of 3 runs=0.306667"])
    assert references == {"base policy": -0.5, "a=b": 2.0, "mean of 3 runs": 0.306667}
    figure = plot.plot({"DSRL-NA": runs}, "eval/success_rate", str(tmp_path / "f"), references)
    axes = figure.axes[0]
    lines = {line.get_label(): line for line in axes.get_lines()}
    assert list(lines["base policy (-0.5)"].get_ydata()) == [-0.5, -0.5]
    assert lines["base policy (-0.5)"].get_linestyle() == "--" and lines["a=b (2)"].get_linestyle() == ":"
    assert list(lines["mean of 3 runs (0.31)"].get_ydata()) == [0.306667] * 2, "the label rounds, the line does not"
    low, high = axes.get_ylim()
    assert low < -0.5 and high > 2.0, "success rates lie in [0, 1]; the references widen the range"
    for rule in ("base policy", "base=high", "=0.3"):
        monkeypatch.setattr(sys, "argv", ["plot.py", *runs, "--out", str(tmp_path / "g"), "--reference", rule])
        with pytest.raises(SystemExit, match=f"--reference {rule!r} is not LABEL=NUMBER"):
            plot.main()


def test_show_seeds_draws_each_seeds_whole_curve_past_the_common_range(runs, tmp_path):
    plot = load_plot_module()
    shorter = tmp_path / "seed1_shorter"
    shorter.mkdir()
    last_step = csv_evaluations(runs[1])[-1][0]
    with open(os.path.join(runs[1], "progress.csv"), newline="") as f:
        reader = csv.DictReader(f)
        rows = [row for row in reader if float(row["train/env_steps"] or 0) < last_step]
    with open(shorter / "progress.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=reader.fieldnames)
        writer.writeheader()
        writer.writerows(rows)
    seeds = [runs[0], str(shorter)]

    figure = plot.plot({"DSRL-NA": seeds}, "eval/success_rate", str(tmp_path / "f"), show_seeds=True)
    lines = figure.axes[0].get_lines()
    (mean,) = [line for line in lines if line.get_label() == "DSRL-NA (n=2)"]
    seed_lines = [line for line in lines if line.get_label() == "_seed"]
    assert mean.get_xdata()[-1] == csv_evaluations(str(shorter))[-1][0] < csv_evaluations(runs[0])[-1][0]
    for line, run_dir in zip(seed_lines, seeds, strict=True):
        steps, values = np.array(csv_evaluations(run_dir)).T
        np.testing.assert_array_equal(line.get_xdata(), steps)
        np.testing.assert_array_equal(line.get_ydata(), values)
        assert line.get_color() == mean.get_color() and line.get_linewidth() < mean.get_linewidth()
    assert [text.get_text() for text in figure.axes[0].get_legend().get_texts()] == ["DSRL-NA (n=2)"]

    plain = plot.plot({"DSRL-NA": seeds}, "eval/success_rate", str(tmp_path / "g"))
    assert [line.get_label() for line in plain.axes[0].get_lines()] == ["DSRL-NA (n=2)"]

    first = csv_evaluations(runs[0])[0][0]
    one_step = plot.plot({"DSRL-NA": runs[:1]}, "eval/success_rate", str(tmp_path / "h"), max_steps=first)
    (point,) = one_step.axes[0].get_lines()
    assert len(point.get_xdata()) == 1 and point.get_marker() == "o", "a single evaluation step is drawn as a point"
    low, high = one_step.axes[0].get_ylim()
    assert low <= point.get_ydata()[0] <= high


def test_max_steps_cuts_each_curve_and_its_final_value_there(runs, tmp_path, capsys, monkeypatch):
    plot = load_plot_module()
    evaluations = [csv_evaluations(run_dir) for run_dir in runs]
    cut = evaluations[0][-2][0]  # the second-to-last evaluation of seed 0
    figure = plot.plot({"DSRL-NA": runs}, "eval/success_rate", str(tmp_path / "f"), show_seeds=True, max_steps=cut)
    seed_lines = [line for line in figure.axes[0].get_lines() if line.get_label() == "_seed"]
    for line, run_evaluations in zip(seed_lines, evaluations, strict=True):
        kept = [(step, value) for step, value in run_evaluations if step <= cut]
        np.testing.assert_array_equal(line.get_xdata(), [step for step, _ in kept])
        assert max(line.get_xdata()) <= cut < run_evaluations[-1][0]
    last = np.mean([[value for step, value in run_evaluations if step <= cut][-1] for run_evaluations in evaluations])
    (line,) = [line for line in capsys.readouterr().out.splitlines() if "final" in line]
    assert line.startswith(f"DSRL-NA: final eval/success_rate = {last:.4f} ")

    first = min(run_evaluations[0][0] for run_evaluations in evaluations)
    monkeypatch.setattr(sys, "argv", ["plot.py", *runs, "--out", str(tmp_path / "g"), "--max-steps", str(first - 1)])
    with pytest.raises(SystemExit, match=r"has no evaluation at or before --max-steps"):
        plot.main()


def test_baselines_are_the_mean_base_policy_the_runs_evaluated_before_training(runs, tmp_path, monkeypatch):
    plot = load_plot_module()
    logged = {
        scale: [csv_evaluations(run, f"base_policy/noise_x{scale}/success_rate") for run in runs]
        for scale in ("1", "0.5")
    }
    assert all(
        evaluations == [(0.0, evaluations[0][1])] for runs_logged in logged.values() for evaluations in runs_logged
    )
    means = {
        scale: np.mean([evaluations[0][1] for evaluations in runs_logged]) for scale, runs_logged in logged.items()
    }
    references = plot.baseline_references(runs, "eval/stochastic_success_rate")
    assert references == {
        "base policy, noise x1 (mean of 2 runs)": pytest.approx(means["1"]),
        "base policy, noise x0.5 (mean of 2 runs)": pytest.approx(means["0.5"]),
    }
    assert list(references)[0].startswith("base policy, noise x1 "), "the larger noise scale first"

    monkeypatch.setattr(sys, "argv", ["plot.py", *runs, "--out", str(tmp_path / "f"), "--baselines"])
    plot.main()
    assert os.path.isfile(tmp_path / "f.png")

    with pytest.raises(ValueError, match="--baselines needs an eval/\\* metric, not 'train/success_rate'"):
        plot.baseline_references(runs, "train/success_rate")
    without = tmp_path / "without"
    without.mkdir()
    with open(os.path.join(runs[0], "progress.csv"), newline="") as f:
        rows = [{k: v for k, v in row.items() if not k.startswith("base_policy/")} for row in csv.DictReader(f)]
    with open(without / "progress.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(ValueError, match="none of the runs logged base_policy/noise_x<S>/success_rate"):
        plot.baseline_references([str(without)], "eval/success_rate")
