import os

import numpy as np
import pytest
from stable_baselines3 import SAC

from dsrl.replay_files import load_replay_buffer, save_replay_buffer

ROW_ARRAYS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")


def collected(buffer_size: int, steps: int) -> SAC:
    """A SAC on Pendulum whose buffer holds ``steps`` collected transitions (no training)."""
    model = SAC("MlpPolicy", "Pendulum-v1", buffer_size=buffer_size, learning_starts=10**6, seed=0, device="cpu")
    model.learn(steps)
    return model


def fresh(buffer_size: int) -> SAC:
    return SAC("MlpPolicy", "Pendulum-v1", buffer_size=buffer_size, seed=1, device="cpu")


def test_a_partly_filled_buffer_is_saved_as_its_filled_rows_and_loads_back_whole(tmp_path):
    model = collected(buffer_size=20_000, steps=500)
    compact, whole = tmp_path / "compact.pkl", tmp_path / "whole.pkl"
    save_replay_buffer(model, str(compact))
    model.save_replay_buffer(whole)
    assert os.path.getsize(compact) < os.path.getsize(whole) / 20, "500 of 20,000 rows: a fortieth of the arrays"
    loaded = fresh(20_000)
    load_replay_buffer(loaded, str(compact))
    original, restored = model.replay_buffer, loaded.replay_buffer
    assert (restored.pos, restored.full, restored.buffer_size) == (500, False, 20_000)
    for name in ROW_ARRAYS:
        a, b = getattr(original, name), getattr(restored, name)
        assert a.shape == b.shape and a.dtype == b.dtype, name
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert not hasattr(restored, "_trimmed_arrays")
    batch = restored.sample(64)
    assert batch.observations.shape == (64, 3)
    assert np.isin(batch.rewards.numpy().ravel(), original.rewards[:500].ravel()).all(), "samples only filled rows"
    np.testing.assert_array_equal(original.observations, model.replay_buffer.observations)  # saving cut a copy


def test_a_full_buffer_and_one_saved_by_sb3_load_unchanged(tmp_path):
    model = collected(buffer_size=200, steps=500)
    assert model.replay_buffer.full
    save_replay_buffer(model, str(tmp_path / "full.pkl"))
    model.save_replay_buffer(tmp_path / "sb3.pkl")
    for name in ("full.pkl", "sb3.pkl"):
        loaded = fresh(200)
        load_replay_buffer(loaded, str(tmp_path / name))
        assert loaded.replay_buffer.full and loaded.replay_buffer.pos == model.replay_buffer.pos
        for array in ROW_ARRAYS:
            np.testing.assert_array_equal(getattr(loaded.replay_buffer, array), getattr(model.replay_buffer, array))


@pytest.mark.parametrize("steps", [0, 1])
def test_an_empty_or_one_row_buffer_round_trips(tmp_path, steps):
    model = collected(buffer_size=100, steps=steps) if steps else fresh(100)
    save_replay_buffer(model, str(tmp_path / "b.pkl"))
    loaded = fresh(100)
    load_replay_buffer(loaded, str(tmp_path / "b.pkl"))
    assert loaded.replay_buffer.pos == steps and loaded.replay_buffer.observations.shape == (100, 1, 3)
    np.testing.assert_array_equal(loaded.replay_buffer.actions, model.replay_buffer.actions)


def test_the_last_next_observation_survives_with_sb3s_memory_optimisation(tmp_path):
    def make(seed: int) -> SAC:
        kwargs = dict(optimize_memory_usage=True, replay_buffer_kwargs={"handle_timeout_termination": False})
        return SAC("MlpPolicy", "Pendulum-v1", buffer_size=1000, learning_starts=10**6, seed=seed, **kwargs)

    model = make(0)
    model.learn(50)
    save_replay_buffer(model, str(tmp_path / "b.pkl"))
    loaded = make(1)
    load_replay_buffer(loaded, str(tmp_path / "b.pkl"))
    last = np.array([49])
    np.testing.assert_array_equal(
        loaded.replay_buffer._get_samples(last).next_observations,
        model.replay_buffer._get_samples(last).next_observations,
    )
    assert loaded.replay_buffer.observations[50].any(), "row pos holds the last transition's next observation"
