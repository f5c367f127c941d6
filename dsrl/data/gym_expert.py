"""D4RL-"medium"-like datasets for gymnasium MuJoCo tasks.

An SB3 SAC expert is trained while snapshots are saved and scored; the
snapshot whose return is closest to ``medium_fraction`` of the best one
(D4RL's medium policies reach about a third of the expert's return) then
collects the dataset with its stochastic policy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
from stable_baselines3 import SAC
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from tqdm import tqdm

from dsrl.data.trajectories import Trajectories, concatenate, record_episode


@dataclass
class Snapshot:
    steps: int
    path: str
    mean_return: float


class SnapshotCallback(BaseCallback):
    """Save and score the SAC policy every ``every`` environment steps."""

    def __init__(self, env_id: str, every: int, out_dir: str, eval_episodes: int, seed: int):
        super().__init__()
        self.eval_env = gym.make(env_id)
        self.every, self.out_dir, self.eval_episodes, self.seed = every, out_dir, eval_episodes, seed
        self.snapshots: list[Snapshot] = []

    def _on_step(self) -> bool:
        if self.num_timesteps % self.every == 0:
            path = os.path.join(self.out_dir, f"sac_{self.num_timesteps}.zip")
            self.model.save(path)
            self.eval_env.reset(seed=self.seed)
            returns, _ = evaluate_policy(self.model, self.eval_env, self.eval_episodes, return_episode_rewards=True)
            self.snapshots.append(Snapshot(self.num_timesteps, path, float(np.mean(returns))))
            tqdm.write(f"{self.num_timesteps} steps: return {np.mean(returns):.1f}")
        return True


def train_expert(
    env_id: str, total_steps: int, snapshot_every: int, out_dir: str, seed: int, eval_episodes: int = 5
) -> list[Snapshot]:
    """Train SB3 SAC (its MuJoCo defaults) and return the scored snapshots."""
    os.makedirs(out_dir, exist_ok=True)
    model = SAC("MlpPolicy", gym.make(env_id), learning_starts=10_000, seed=seed, device="cpu", verbose=0)
    callback = SnapshotCallback(env_id, snapshot_every, out_dir, eval_episodes, seed + 1)
    model.learn(total_steps, callback=callback, progress_bar=True)
    return callback.snapshots


def pick_medium(snapshots: list[Snapshot], medium_fraction: float) -> Snapshot:
    """The snapshot whose return is closest to ``medium_fraction`` of the best snapshot's."""
    best = max(s.mean_return for s in snapshots)
    return min(snapshots, key=lambda s: abs(s.mean_return - medium_fraction * best))


def collect(model_path: str, env_id: str, n_steps: int, seed: int) -> tuple[Trajectories, list[float]]:
    """Roll out the snapshot's stochastic policy for ``n_steps`` steps (whole episodes, the last one cut).

    :return: the trajectories in simulator units and each finished episode's return
    """
    model = SAC.load(model_path, device="cpu")
    env = gym.make(env_id)
    episodes, returns, steps = [], [], 0
    with tqdm(total=n_steps, desc=f"collecting {env_id}") as bar:
        while steps < n_steps:
            episode, _, done = record_episode(
                env, lambda obs: model.predict(obs, deterministic=False)[0], seed + len(episodes), n_steps - steps
            )
            if done:
                returns.append(float(np.sum(episode["rewards"])))
            episodes.append(episode)
            steps += len(episode["actions"])
            bar.update(len(episode["actions"]))
    return concatenate(episodes), returns
