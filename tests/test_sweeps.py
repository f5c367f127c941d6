"""Seed sweeps: Hydra multirun with the joblib launcher, and the SLURM launcher's job script."""

import glob
import subprocess
import sys

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from submitit.slurm.slurm import _make_sbatch_string

from dsrl.config import REPO_ROOT


def test_joblib_multirun_runs_one_directory_per_seed(tmp_path):
    command = [
        sys.executable,
        str(REPO_ROOT / "train_dsrl.py"),
        f"--config-path={REPO_ROOT / 'cfg/steering'}",
        "--config-name=dsrl_steering.yaml",
        "-m",
        "seed=0,1",
        "hydra/launcher=local_seeds",
        "hydra.launcher.n_jobs=2",
        f"hydra.sweep.dir={tmp_path}",
        "wandb.mode=disabled",
        "train.total_env_steps=400",
        "eval.interval_env_steps=0",
        "eval.n_episodes=4",
        "progress_bar=false",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2,backend=loky" in result.stdout + result.stderr
    runs = sorted(glob.glob(str(tmp_path / "*_dsrl_na_seed*")))
    assert [p.rsplit("/", 1)[1] for p in runs] == ["0_dsrl_na_seed0", "1_dsrl_na_seed1"]
    for seed, run_dir in enumerate(runs):
        assert OmegaConf.load(f"{run_dir}/config.yaml").seed == seed
        assert glob.glob(f"{run_dir}/checkpoints/model_*.zip") and glob.glob(f"{run_dir}/progress.csv")


def test_slurm_launcher_config_loads_and_renders_the_job(tmp_path):
    with initialize_config_dir(config_dir=str(REPO_ROOT / "cfg/robomimic"), version_base="1.3"):
        cfg = compose(
            "dsrl_can.yaml",
            overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "seed=2"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    script = _make_sbatch_string(
        command="python train_dsrl.py seed=2",
        folder=str(tmp_path),
        job_name=launcher.name,
        partition=launcher.partition,
        time=launcher.timeout_min,
        ntasks_per_node=launcher.tasks_per_node,
        cpus_per_task=launcher.cpus_per_task,
        gpus_per_node=launcher.gpus_per_node,
        mem=f"{launcher.mem_gb}GB",
        signal_delay_s=launcher.signal_delay_s,
        array_parallelism=launcher.array_parallelism,
    )
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --time=2880",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=32GB",
    ):
        assert line in script, script
