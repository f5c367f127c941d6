"""SB3 callbacks of a DSRL run: simulator-step counting, evaluation, checkpoints; W&B output."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import KVWriter
from stable_baselines3.common.vec_env import VecEnv
from tqdm import tqdm

from dsrl.evaluation import evaluate


class WandbOutputFormat(KVWriter):
    """SB3 logger output that sends every dumped record to an active W&B run."""

    def __init__(self, run: Any):
        self.run = run

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, Any], step: int = 0) -> None:
        numbers = {k: v for k, v in key_values.items() if isinstance(v, (int, float, np.number))}
        self.run.log(numbers, step=step)


class DSRLCallback(BaseCallback):
    """Counts simulator steps and, by that count, evaluates, saves and stops.

    Records ``train/env_steps`` (simulator steps, chunk included) and
    ``train/gradient_steps`` with every log dump, ``eval/*`` after each
    evaluation, and writes ``<run_dir>/checkpoints/model_<env_steps>.zip``
    (through a temporary file, so no partial file is ever taken as a checkpoint).

    :param eval_env: evaluation VecEnv, in the model's action space
    :param total_env_steps: stop once this many simulator steps have run
    :param eval_interval: simulator steps between evaluations (0: only the final one)
    :param eval_episodes: episodes per evaluation
    :param eval_deterministic: evaluate the actor's mean noise
    :param save_interval: simulator steps between checkpoints (0: only at the end)
    :param checkpoint_dir: where checkpoints go
    :param seed: evaluation episodes are seeded from it, identically each time
    :param progress_bar: show a console bar of simulator steps with steps/s and the latest evaluation
    """

    def __init__(
        self,
        eval_env: VecEnv,
        total_env_steps: int,
        eval_interval: int,
        eval_episodes: int,
        eval_deterministic: bool,
        save_interval: int,
        checkpoint_dir: str,
        seed: int,
        progress_bar: bool = True,
    ):
        super().__init__()
        self.eval_env = eval_env
        self.total_env_steps = total_env_steps
        self.eval_interval = eval_interval
        self.eval_episodes = eval_episodes
        self.eval_deterministic = eval_deterministic
        self.save_interval = save_interval
        self.checkpoint_dir = checkpoint_dir
        self.seed = seed
        self.env_steps = 0
        self.next_eval = eval_interval
        self.next_save = save_interval
        self.last_eval: dict[str, float] = {}
        self.last_eval_step = -1
        self.show_progress = progress_bar
        self.bar: tqdm | None = None

    def _on_training_start(self) -> None:
        if self.show_progress:
            self.bar = tqdm(total=self.total_env_steps, initial=self.env_steps, unit="env step", dynamic_ncols=True)

    def _on_step(self) -> bool:
        new_steps = sum(int(info.get("sim_steps", 0)) for info in self.locals["infos"])
        self.env_steps += new_steps
        if self.bar is not None:
            self.bar.update(new_steps)
        self.logger.record("train/env_steps", self.env_steps)
        self.logger.record("train/gradient_steps", self.model._n_updates)
        if self.eval_interval and self.env_steps >= self.next_eval:
            self.next_eval += self.eval_interval
            self.run_evaluation()
        if self.save_interval and self.env_steps >= self.next_save:
            self.next_save += self.save_interval
            self.save()
        return self.env_steps < self.total_env_steps

    def run_evaluation(self) -> dict[str, float]:
        self.last_eval_step = self.env_steps
        self.last_eval = evaluate(self.model, self.eval_env, self.eval_episodes, self.eval_deterministic, self.seed)
        for key, value in self.last_eval.items():
            self.logger.record(f"eval/{key}", value)
        if self.bar is not None:
            self.bar.set_postfix({f"eval {k}": f"{v:.3g}" for k, v in self.last_eval.items() if k != "return_std"})
        self.logger.record("train/env_steps", self.env_steps)
        self.logger.dump(self.num_timesteps)
        return self.last_eval

    def save(self) -> str:
        os.makedirs(self.checkpoint_dir, exist_ok=True)
        path = os.path.join(self.checkpoint_dir, f"model_{self.env_steps}.zip")
        tmp = os.path.join(self.checkpoint_dir, f".model_{self.env_steps}.partial.zip")
        self.model.save(tmp)
        os.replace(tmp, path)
        return path

    def _on_training_end(self) -> None:
        if self.last_eval_step != self.env_steps:
            self.run_evaluation()
        self.save()
        if self.bar is not None:
            self.bar.close()
