"""The LeRobot adapter's checks that run without LeRobot (it lives in its own environment; see
scripts/lerobot/check_adapter.py for the comparison with LeRobot's sampler)."""

import json

import numpy as np
import pytest

from dsrl.base_policies import load_base_policy
from dsrl.base_policies.normalization import EPS, Normalizer
from dsrl.config import compose_task_config, repo_path
from dsrl.training import run

PIXELS_CONFIG = repo_path("cfg/pusht/dsrl_pusht_pixels.yaml")


def lerobot_run_config(directory, tmp_path):
    return compose_task_config(
        PIXELS_CONFIG,
        [f"run_dir={tmp_path / 'run'}", "base_policy.type=lerobot", f"base_policy.checkpoint={directory}"],
    )


def test_lerobot_directory_without_config_or_weights_is_refused_before_training(tmp_path):
    directory = tmp_path / "pretrained_model"
    with pytest.raises(FileNotFoundError, match=r"base_policy.checkpoint='.*pretrained_model' is not a directory"):
        run(lerobot_run_config(directory, tmp_path))
    directory.mkdir()
    with pytest.raises(FileNotFoundError, match=r"pretrained_model' has no config.json"):
        run(lerobot_run_config(directory, tmp_path))
    (directory / "config.json").write_text(json.dumps({"type": "diffusion"}))
    with pytest.raises(FileNotFoundError, match=r"pretrained_model' has no model.safetensors"):
        run(lerobot_run_config(directory, tmp_path))
    assert not (tmp_path / "run").exists(), "nothing is written before the checks pass"


def test_lerobot_type_without_lerobot_names_its_environment(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ImportError, match="scripts/lerobot/make_env.sh"):
        load_base_policy({"type": "lerobot", "checkpoint": str(tmp_path)})


def test_identity_observation_bounds_leave_observations_exact():
    obs = np.array([[0.0, 255.0, 256.12345, -0.7]], np.float32)
    identity = Normalizer(np.full(4, -1, np.float32), np.full(4, 1 - EPS, np.float32), np.zeros(1), np.ones(1))
    np.testing.assert_array_equal(identity.normalize_obs(obs), obs)
