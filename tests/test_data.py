"""Datasets: DPPO npz and Robomimic hdf5 round trips, conversion, chunking, offline transitions."""

import os
import re
import signal
import subprocess
import sys
import time

import gymnasium as gym
import h5py
import numpy as np
import pytest
import torch
import yaml
from conftest import run_script

from dsrl.base_policies.normalization import Normalizer
from dsrl.config import REPO_ROOT
from dsrl.data.observation_histories import ObservationHistories
from dsrl.data.offline import agent_observations, chunk_transitions
from dsrl.data.robomimic_hdf5 import read_low_dim, write_demos
from dsrl.data.trajectories import (
    Trajectories,
    chunk_pairs,
    join_dppo,
    load_dppo,
    record_episode,
    split_images,
)

KEYS = ["robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "object"]
SIZES = {"robot0_eef_pos": 3, "robot0_eef_quat": 4, "robot0_gripper_qpos": 2, "object": 14}


def trajectories(lengths=(3, 2)):
    n = sum(lengths)
    rng = np.random.default_rng(0)
    return Trajectories(
        states=rng.normal(size=(n, 4)).astype(np.float32),
        actions=rng.uniform(-2, 2, (n, 2)).astype(np.float32),
        rewards=np.arange(n, dtype=np.float32),
        terminals=np.array([False, False, True, False, False]),
        traj_lengths=np.array(lengths),
    )


def test_dppo_npz_round_trip_is_normalised(tmp_path):
    data = trajectories()
    normalizer = data.save_dppo(str(tmp_path))
    loaded = load_dppo(str(tmp_path / "train.npz"))
    assert loaded.states.min() >= -1 - 1e-5 and loaded.states.max() <= 1 + 1e-5
    np.testing.assert_allclose(normalizer.unnormalize_action(loaded.actions), data.actions, atol=1e-4)
    np.testing.assert_array_equal(loaded.traj_lengths, [3, 2])
    np.testing.assert_array_equal(loaded.terminals, data.terminals)


def test_joined_datasets_keep_both_in_order_with_bounds_covering_both(tmp_path):
    first, second = trajectories(), trajectories((1, 4))
    second.states = second.states * 3 + 5  # other bounds
    first.save_dppo(str(tmp_path / "a"))
    pixel_like = Normalizer.fit(second.states, second.actions)
    pixel_like.obs_max[0] = 100.0  # a bound set, not fitted (like the pixels' 255)
    second.save_dppo(str(tmp_path / "b"), pixel_like)
    joined, normalizer = join_dppo([str(tmp_path / "a"), str(tmp_path / "b")])
    np.testing.assert_allclose(joined.states, np.concatenate([first.states, second.states]), atol=1e-4)
    np.testing.assert_allclose(joined.actions, np.concatenate([first.actions, second.actions]), atol=1e-4)
    np.testing.assert_array_equal(joined.traj_lengths, [3, 2, 1, 4])
    np.testing.assert_array_equal(joined.rewards, np.concatenate([first.rewards, second.rewards]))
    assert normalizer.obs_max[0] == 100.0
    np.testing.assert_allclose(normalizer.obs_min, np.minimum(first.states.min(0), second.states.min(0)))
    first.states = first.states[:, :3]
    first.save_dppo(str(tmp_path / "c"))
    with pytest.raises(ValueError, match=r"'.*c' has obs_dim 3 and action_dim 2, '.*a' has 4 and 2"):
        join_dppo([str(tmp_path / "a"), str(tmp_path / "c")])


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.pop("rewards"), r"lacks array\(s\) \['rewards'\]"),
        (lambda d: d.update(traj_lengths=np.array([3, 3])), "states has 5 rows, traj_lengths sum to 6"),
        (lambda d: d["actions"].__setitem__((1, 0), np.nan), "actions has a non-finite value at row 1"),
    ],
)
def test_bad_dppo_npz_names_file_and_key(tmp_path, change, message):
    data = trajectories()
    arrays = {k: getattr(data, k).copy() for k in ("states", "actions", "rewards", "terminals", "traj_lengths")}
    change(arrays)
    np.savez(tmp_path / "train.npz", **arrays)
    with pytest.raises(ValueError, match=message) as info:
        load_dppo(str(tmp_path / "train.npz"))
    assert "train.npz" in str(info.value)


def test_chunk_pairs_pad_actions_and_history():
    data = trajectories()
    rows, chunks = chunk_pairs(data, chunk=3, cond_steps=2)
    assert chunks.shape == (5, 3, 2)
    np.testing.assert_array_equal(rows, [[0, 0], [0, 1], [1, 2], [3, 3], [3, 4]])
    np.testing.assert_array_equal(chunks[2], data.actions[[2, 2, 2]])
    np.testing.assert_array_equal(chunks[3], data.actions[[3, 4, 4]])
    obs = ObservationHistories(data, rows, Normalizer.fit(data.states, data.actions))[torch.arange(5)].numpy()
    np.testing.assert_array_equal(obs[0], np.concatenate([data.states[0], data.states[0]]))
    np.testing.assert_array_equal(obs[4], np.concatenate([data.states[3], data.states[4]]))


def image_trajectories(lengths=(3, 2), seed=0):
    n = sum(lengths)
    rng = np.random.default_rng(seed)
    return Trajectories(
        states=rng.uniform(0, 512, (n, 2)).astype(np.float32),
        actions=rng.uniform(0, 512, (n, 2)).astype(np.float32),
        rewards=np.zeros(n, np.float32),
        terminals=np.zeros(n, bool),
        traj_lengths=np.array(lengths),
        images=rng.integers(0, 256, (n, 3, 4, 4), dtype=np.uint8),
    )


def test_image_datasets_keep_uint8_pixels_and_give_the_policy_the_normalised_observations(tmp_path):
    data = image_trajectories()
    normalizer = data.save_dppo(str(tmp_path))
    with np.load(tmp_path / "train.npz") as stored:
        assert stored["images"].dtype == np.uint8 and stored["images"].shape == (5, 3, 4, 4)
        assert stored["states"].shape == (5, 2)
    assert (
        normalizer.obs_dim == 48 + 2 and (normalizer.obs_min[:48] == 0).all() and (normalizer.obs_max[:48] == 255).all()
    )
    loaded = load_dppo(str(tmp_path / "train.npz"))
    np.testing.assert_array_equal(loaded.images, data.images)
    rows, _ = chunk_pairs(loaded, chunk=2, cond_steps=2)
    histories = ObservationHistories(loaded, rows, normalizer)[torch.arange(5)].numpy()
    flat = normalizer.normalize_obs(np.concatenate([data.images.reshape(5, -1), data.states], axis=1))
    np.testing.assert_allclose(histories, np.concatenate([flat[rows[:, 0]], flat[rows[:, 1]]], axis=1), atol=1e-5)


def test_joined_image_datasets_keep_their_images_and_refuse_other_image_sizes(tmp_path):
    first, second = image_trajectories(), image_trajectories((4,), seed=1)
    first.save_dppo(str(tmp_path / "a"))
    second.save_dppo(str(tmp_path / "b"))
    joined, normalizer = join_dppo([str(tmp_path / "a"), str(tmp_path / "b")])
    np.testing.assert_array_equal(joined.images, np.concatenate([first.images, second.images]))
    np.testing.assert_allclose(joined.states, np.concatenate([first.states, second.states]), rtol=1e-4)
    assert (normalizer.obs_max[:48] == 255).all()
    flat = Trajectories(
        **{k: getattr(second, k) for k in ("actions", "rewards", "terminals", "traj_lengths")},
        states=np.concatenate([second.images.reshape(4, -1), second.states], axis=1).astype(np.float32),
    )
    flat.save_dppo(str(tmp_path / "c"), normalizer)
    with pytest.raises(ValueError, match=r"'.*c' has 0 image pixels per observation, '.*a' has 48"):
        join_dppo([str(tmp_path / "a"), str(tmp_path / "c")])
    with pytest.raises(ValueError, match=r"holds images.*train.agent_obs=policy_embedding"):
        agent_observations(load_dppo(str(tmp_path / "a" / "train.npz")), normalizer)


def test_recorded_pusht_pixels_split_into_the_rendered_image_and_the_agent_position():
    pytest.importorskip("gym_pusht")
    from dsrl.envs.pusht import IMAGE_SHAPE, PUSHT_ID, make_pusht_env

    env = make_pusht_env(PUSHT_ID, 10, obs_type="pixels_agent_pos")
    steps, _, _ = record_episode(env, lambda obs: np.array([300.0, 300.0]), seed=0, max_steps=3)
    split = split_images(steps, IMAGE_SHAPE)
    assert split["images"].dtype == np.uint8 and split["images"].shape == (3, *IMAGE_SHAPE)
    np.testing.assert_array_equal(split["images"].reshape(3, -1), steps["states"][:, :-2])
    np.testing.assert_array_equal(split["states"], steps["states"][:, -2:])


def test_record_episode_keeps_the_labelled_action_and_executes_the_noisy_one():
    env = gym.make("Pendulum-v1", max_episode_steps=20)
    noisy = iter(np.linspace(-2.0, 2.0, 20))
    executed = []

    def act(obs):
        executed.append(np.array([next(noisy)], np.float32))
        return executed[-1]

    steps, _, done = record_episode(env, act, seed=0, max_steps=20, label=lambda: np.zeros(1, np.float32))
    assert done and steps["actions"].shape == (20, 1) and not steps["actions"].any(), "the labels are recorded"
    replay, _, _ = record_episode(env, lambda obs: executed.pop(0), seed=0, max_steps=20)
    np.testing.assert_allclose(replay["states"], steps["states"], err_msg="the noisy actions were executed")


def test_offline_transitions_sum_rewards_inside_the_trajectory(tmp_path):
    data = trajectories()
    normalizer = data.save_dppo(str(tmp_path))
    loaded = load_dppo(str(tmp_path / "train.npz"))
    transitions = chunk_transitions(loaded, agent_observations(loaded, normalizer), chunk=2, reward_offset=1.0)
    assert transitions["actions"].shape == (5, 4)
    np.testing.assert_array_equal(transitions["obs"], loaded.states)
    np.testing.assert_array_equal(transitions["next_obs"], loaded.states[[2, 2, 2, 4, 4]])
    np.testing.assert_allclose(
        transitions["rewards"], [(0 - 1) + (1 - 1), (1 - 1) + (2 - 1), 2 - 1, (3 - 1) + (4 - 1), 4 - 1]
    )
    np.testing.assert_array_equal(transitions["dones"], [0, 1, 1, 0, 0])


def robomimic_demo(length, rng):
    return {
        "obs": [{k: rng.normal(size=SIZES[k]) for k in KEYS} for _ in range(length)],
        "actions": rng.uniform(-1, 1, (length, 7)),
        "rewards": np.r_[np.zeros(length - 1), 1.0],
        "dones": np.r_[np.zeros(length - 1), 1.0],
        "states": rng.normal(size=(length, 30)),
    }


def test_robomimic_hdf5_round_trip_concatenates_keys_in_order(tmp_path):
    rng = np.random.default_rng(0)
    demos = [robomimic_demo(5, rng), robomimic_demo(3, rng)]
    path = str(tmp_path / "demos.hdf5")
    write_demos(path, {"env_name": "PickPlaceCan", "env_kwargs": {"control_freq": 20}}, demos)
    with h5py.File(path, "r") as f:
        assert f["data"].attrs["total"] == 8 and f["data/demo_1"].attrs["num_samples"] == 3
    data = read_low_dim(path, KEYS)
    assert data.states.shape == (8, 23) and list(data.traj_lengths) == [5, 3]
    expected = np.concatenate([demos[1]["obs"][2][k] for k in KEYS])
    np.testing.assert_allclose(data.states[-1], expected, rtol=1e-6)
    assert data.terminals.tolist() == [False] * 4 + [True] + [False] * 2 + [True]


def test_missing_robomimic_obs_key_names_file_demo_and_key(tmp_path):
    rng = np.random.default_rng(0)
    path = str(tmp_path / "demos.hdf5")
    write_demos(path, {"env_name": "Lift", "env_kwargs": {}}, [robomimic_demo(4, rng)])
    with pytest.raises(ValueError, match=r"demos.hdf5: demo_0 lacks obs key 'robot1_eef_pos'"):
        read_low_dim(path, KEYS + ["robot1_eef_pos"])


def test_convert_a_robomimic_format_file_like_the_released_ones(tmp_path):
    """A file laid out as Robomimic's low_dim_v15.hdf5 (written with h5py alone) converts to DPPO npz."""
    rng = np.random.default_rng(1)
    path = tmp_path / "low_dim_v15.hdf5"
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["env_args"] = '{"env_name": "PickPlaceCan", "type": 1, "env_kwargs": {}}'
        for i, length in enumerate([6, 4]):
            demo = data.create_group(f"demo_{i}")
            demo.attrs["num_samples"] = length
            demo["actions"] = rng.uniform(-1, 1, (length, 7))
            demo["rewards"] = np.zeros(length)
            demo["dones"] = np.zeros(length, dtype=np.int64)
            demo["states"] = rng.normal(size=(length, 71))
            for key in KEYS + ["robot0_joint_pos"]:
                demo[f"obs/{key}"] = rng.normal(size=(length, SIZES.get(key, 7)))
        data.attrs["total"] = 10
    out = tmp_path / "npz"
    result = run_script("scripts/make_dataset.py", "convert", "--hdf5", str(path), "--task", "can", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "2 demos, 10 steps, obs_dim 23, action_dim 7" in result.stdout
    loaded = load_dppo(str(out / "train.npz"))
    assert loaded.states.shape == (10, 23) and os.path.isfile(out / "normalization.npz")


def test_gym_medium_snapshot_and_collection(tmp_path):
    import gymnasium as gym
    from stable_baselines3 import SAC

    from dsrl.data.gym_expert import Snapshot, collect, pick_medium

    snapshots = [Snapshot(10, "a", 20.0), Snapshot(20, "b", 310.0), Snapshot(30, "c", 1000.0), Snapshot(40, "d", 900.0)]
    assert pick_medium(snapshots, 1 / 3).steps == 20
    path = str(tmp_path / "sac.zip")
    SAC("MlpPolicy", gym.make("Hopper-v5"), seed=0, device="cpu").save(path)
    data, returns = collect(path, "Hopper-v5", n_steps=300, seed=0)
    assert int(data.traj_lengths.sum()) == 300 and data.states.shape == (300, 11) and data.actions.shape == (300, 3)
    assert len(returns) == int(data.terminals.sum()) == len(data.traj_lengths) - (0 if data.terminals[-1] else 1)
    data.validate("collected")


def test_pretrain_script_lowers_the_loss_and_never_overwrites_silently(tmp_path):
    data, out = tmp_path / "steering", tmp_path / "policy"
    made = run_script("scripts/make_dataset.py", "steering", "--out", str(data), "--episodes", "40")
    assert made.returncode == 0, made.stderr
    pretrain = [
        "scripts/pretrain.py",
        "--config-path=cfg/pretrain",
        "--config-name=steering.yaml",
        f"dataset={data}",
        f"output_dir={out}",
        "train.steps=60",
        "train.save_every=30",
        "eval.n_episodes=0",
    ]
    first = run_script(*pretrain)
    assert first.returncode == 0, first.stderr
    assert sorted(os.listdir(out)) == ["card.yaml", "normalization.npz", "state.pt", "state_30.pt", "state_60.pt"]
    with open(out / "card.yaml") as f:
        losses = [c["loss"] for c in yaml.safe_load(f)["checkpoints"]]
    assert losses[-1] < min(0.6, losses[0]), f"the noise-prediction loss starts near 1: {losses}"

    refused = run_script(*pretrain)
    assert refused.returncode != 0 and "already holds a policy (card.yaml, state.pt, state_30.pt" in refused.stderr
    for step in (30, 60):  # a shipped policy's folder: state.pt and card.yaml only
        os.remove(out / f"state_{step}.pt")
    refused = run_script(*pretrain)
    assert refused.returncode != 0 and "already holds a policy (card.yaml, state.pt); set overwrite=true" in (
        refused.stderr
    )
    assert sorted(os.listdir(out)) == ["card.yaml", "normalization.npz", "state.pt"], "nothing touched"
    again = run_script(*pretrain[:-3], "train.steps=40", "train.save_every=40", "eval.n_episodes=0", "overwrite=true")
    assert again.returncode == 0, again.stderr
    assert "state_30.pt" not in os.listdir(out) and "state_40.pt" in os.listdir(out), "no stale checkpoint is left"


def test_pretrain_stopped_by_ctrl_c_resumes_to_the_weights_of_an_unstopped_run(tmp_path):
    data = tmp_path / "steering"
    assert run_script("scripts/make_dataset.py", "steering", "--out", str(data), "--episodes", "20").returncode == 0
    pretrain = ["scripts/pretrain.py", "--config-path=cfg/pretrain", "--config-name=steering.yaml", f"dataset={data}"]
    pretrain += ["train.steps=600", "train.batch_size=64", "train.save_every=25", "eval.n_episodes=0"]
    stopped, straight = tmp_path / "stopped", tmp_path / "straight"
    process = subprocess.Popen(
        [sys.executable, *pretrain, f"output_dir={stopped}"],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.time() + 120
    while not os.path.isfile(stopped / "state_25.pt") and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr[-2000:]
    (step,) = re.findall(r"stopped by SIGINT at step (\d+), training state saved in \S+state_\1.pt", stderr)
    assert 25 <= int(step) < 600 and "(continue with resume=true)" in stderr
    assert not os.path.isfile(stopped / "state.pt") and not os.path.isfile(stopped / "card.yaml")

    other_schedule = run_script(*pretrain, f"output_dir={stopped}", "resume=true", "train.steps=5000")
    assert other_schedule.returncode != 0
    assert "resume=true: train.steps is 5000 here but 600 in the run that wrote" in other_schedule.stderr
    both = run_script(*pretrain, f"output_dir={stopped}", "resume=true", "overwrite=true")
    assert both.returncode != 0 and "resume=true and overwrite=true" in both.stderr
    nothing = run_script(*pretrain, f"output_dir={straight}", "resume=true")
    assert nothing.returncode != 0 and "holds no state_<step>.pt to continue from" in nothing.stderr

    resumed = run_script(*pretrain, f"output_dir={stopped}", "resume=true")
    assert resumed.returncode == 0, resumed.stderr
    assert run_script(*pretrain, f"output_dir={straight}").returncode == 0
    with open(stopped / "card.yaml") as f:
        assert [c["step"] for c in yaml.safe_load(f)["checkpoints"]] == list(range(25, 601, 25))
    weights = [torch.load(d / "state.pt", weights_only=True)["ema"] for d in (stopped, straight)]
    for key, value in weights[1].items():
        torch.testing.assert_close(weights[0][key], value, rtol=0, atol=0, msg=key)
