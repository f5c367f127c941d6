"""scripts/benchmark.py writes the documented measures (timings are reported, never asserted)."""

import json
import subprocess
import sys

from dsrl.config import REPO_ROOT

FIELDS = {
    "dsrl_na_update_s",
    "floor_update_s",
    "dsrl_na_over_floor",
    "sb3_sac_update_s",
    "dsrl_sac_wrapper_overhead_s_per_env_step",
    "base_policy_samples_per_s_batch_1",
    "base_policy_samples_per_s_batch_256",
}
VARIANT_FIELDS = {
    f"dsrl_na_{variant}_{measure}"
    for variant in ("compiled", "bf16", "compiled_bf16")
    for measure in ("update_s", "over_floor")
}
SIM_FIELDS = {"simulator_steps_per_s", "robosuite_steps_per_s", "simulator_speedup"}


def test_benchmark_json_has_every_measure(tmp_path):
    out = tmp_path / "bench.json"
    command = [sys.executable, str(REPO_ROOT / "scripts/benchmark.py"), "--configs", "hopper", "--repeats", "1"]
    command += ["--compiled", "--bf16", "--device", "cpu", "--json", str(out)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and set(report["configs"]) == {"hopper"}
    hopper = report["configs"]["hopper"]
    assert set(hopper) == FIELDS | VARIANT_FIELDS
    for prefix in ("dsrl_na", "dsrl_na_compiled", "dsrl_na_bf16", "dsrl_na_compiled_bf16"):
        assert hopper[f"{prefix}_over_floor"] == hopper[f"{prefix}_update_s"] / hopper["floor_update_s"]
    assert all(hopper[k] > 0 for k in FIELDS - {"dsrl_sac_wrapper_overhead_s_per_env_step"})
    assert "dsrl_na_update_s" in result.stdout and "floor_update_s" in result.stdout


def test_benchmark_times_robomimic_simulators_against_robosuites_own_step(tmp_path):
    out = tmp_path / "sim.json"
    command = [sys.executable, str(REPO_ROOT / "scripts/benchmark.py"), "--configs", "", "--sim", "lift"]
    command += ["--sim-procs", "1", "--sim-steps", "20", "--sim-rounds", "1", "--json", str(out)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    lift = report["configs"]["lift"]
    assert report["sim_procs"] == 1 and set(lift) == SIM_FIELDS
    assert lift["simulator_speedup"] == lift["simulator_steps_per_s"] / lift["robosuite_steps_per_s"]
    assert all(lift[k] > 0 for k in SIM_FIELDS) and "simulator_speedup" in result.stdout
