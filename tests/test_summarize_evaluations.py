"""scripts/summarize_evaluations.py on evaluate.py-style JSONs: groups, per-seed values, t-interval means, errors."""

import json
import subprocess
import sys

import matplotlib.image
import pytest
from scipy import stats

from dsrl.config import REPO_ROOT

SCRIPT = str(REPO_ROOT / "scripts" / "summarize_evaluations.py")


def write_evaluation(path, success_rate, **fields):
    evaluation = {
        "mode": "agent",
        "config": "cfg/robomimic/dsrl_lift.yaml",
        "episodes": 100,
        "return_mean": -100.0 * success_rate,
        "success_rate": success_rate,
        "success_rate_ci95": 1.96 * (success_rate * (1 - success_rate) / 100) ** 0.5,
        **fields,
    }
    path.write_text(json.dumps(evaluation))
    return str(path)


def summarize(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=120)


def test_groups_print_each_seed_and_the_t_interval_of_their_mean_and_draw_a_scatter(tmp_path):
    rates = (0.94, 0.85, 0.95)
    agents = [write_evaluation(tmp_path / f"seed{i}_mean.json", rate, noise="mean") for i, rate in enumerate(rates)]
    sampled = [
        write_evaluation(tmp_path / f"seed{i}_sampled.json", rate, noise="sampled")
        for i, rate in enumerate((0.95, 0.89))
    ]
    base = write_evaluation(tmp_path / "base.json", 0.96, mode="base_policy", noise_scale=0.5)
    out_path = tmp_path / "figure" / "final"
    result = summarize(*agents, *sampled, base, "--out", str(out_path), "--reference", "base policy=0.54")
    assert result.returncode == 0, result.stderr
    half = stats.t.ppf(0.975, 2) * stats.tstd(rates) / 3**0.5
    assert f"agent, mean noise (dsrl_lift): mean success_rate 0.9133 ± {half:.4f} (95% t over 3)" in result.stdout
    assert "agent, sampled noise (dsrl_lift): mean success_rate 0.9200 ± " in result.stdout
    assert "base policy, noise x0.5 (dsrl_lift): mean success_rate 0.9600 (one, no interval)" in result.stdout
    assert f"  0.8500 ± {1.96 * (0.85 * 0.15 / 100) ** 0.5:.4f}  {agents[1]}" in result.stdout
    assert matplotlib.image.imread(f"{out_path}.png").shape[1] > 500 and (tmp_path / "figure" / "final.svg").is_file()

    grouped = summarize(*agents, *sampled, "--group", "all seeds=*seed*", "--metric", "return_mean")
    assert grouped.returncode == 0, grouped.stderr
    assert "all seeds: mean return_mean -91.6000 ± " in grouped.stdout and "(95% t over 5)" in grouped.stdout


@pytest.mark.parametrize(
    "contents, args, message",
    [
        ({"success_rate": 0.5}, [], "is not a scripts/evaluate.py --json file (no 'mode')"),
        ({"mode": "agent", "return_mean": 1.0}, [], "has no 'success_rate'; it has ['return_mean']"),
        ({"mode": "agent", "success_rate": 0.5}, ["--group", "x=*nothing*"], "--group 'x=*nothing*' matches none of"),
    ],
)
def test_bad_inputs_are_named(tmp_path, contents, args, message):
    path = tmp_path / "evaluation.json"
    path.write_text(json.dumps(contents))
    result = summarize(str(path), *args)
    assert result.returncode == 1 and message in result.stderr
