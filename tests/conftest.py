"""Shared fixtures: small base policies and configs built in seconds."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from dsrl.base_policies import Normalizer, build_base_policy
from dsrl.base_policies.checkpoint import save_checkpoint
from dsrl.config import REPO_ROOT, repo_path

GOLDEN_DIR = os.path.join(os.path.dirname(__file__), "golden", "dppo")
STEERING_CONFIG = repo_path("cfg/steering/dsrl_steering.yaml")
HOPPER_CONFIG = repo_path("cfg/gym/dsrl_hopper.yaml")

torch.set_num_threads(min(2, torch.get_num_threads()))


def run_script(*args: str) -> subprocess.CompletedProcess:
    """Run ``python *args`` from the repository root, capturing text output."""
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO_ROOT)


def policy_files(folder) -> list[str]:
    """Overrides pointing ``base_policy`` at a folder as pretrain.py writes it (state.pt, normalization.npz)."""
    return [f"base_policy.checkpoint={folder}/state.pt", f"base_policy.normalization={folder}/normalization.npz"]


SMALL_POLICY = dict(
    type="diffusion",
    obs_dim=3,
    action_dim=2,
    horizon_steps=4,
    mlp_dims=[32, 32, 32],
    residual_style=True,
    denoising_steps=10,
    ddim_steps=5,
)
SMALL_FLOW_POLICY = dict(
    {k: v for k, v in SMALL_POLICY.items() if k not in ("denoising_steps", "ddim_steps")}, type="flow", flow_steps=5
)


@pytest.fixture(autouse=True, scope="session")
def sb3_log_dir(tmp_path_factory):
    """SB3's ``learn()`` without a custom logger makes a folder in $SB3_LOGDIR, else one per call in the system temp."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SB3_LOGDIR", str(tmp_path_factory.mktemp("sb3_logs")))
        yield


@pytest.fixture
def small_policy():
    torch.manual_seed(0)
    return build_base_policy(SMALL_POLICY).freeze()


@pytest.fixture
def hopper_files(tmp_path):
    """The golden Gym-hopper checkpoint (DPPO's hopper network) with wide normalisation bounds."""
    normalization = tmp_path / "normalization.npz"
    Normalizer(
        np.full(11, -10.0, np.float32),
        np.full(11, 10.0, np.float32),
        np.full(3, -1.0, np.float32),
        np.full(3, 1.0, np.float32),
    ).save(str(normalization))
    return os.path.join(GOLDEN_DIR, "gym_hopper_state.pt"), str(normalization)


@pytest.fixture
def small_checkpoint(tmp_path, small_policy):
    path = tmp_path / "small.pt"
    save_checkpoint(str(path), small_policy, small_policy, epoch=1)
    return str(path)
