"""The SB3 callback of a DSRL run: simulator-step counting, training metrics, evaluation, checkpoints."""

from __future__ import annotations

import signal
import time
from typing import Callable

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv
from tqdm import tqdm

from dsrl.checkpointing import Checkpointer, Resume
from dsrl.evaluation import EvaluationStopped, evaluate
from dsrl.interrupts import StopRequest
from dsrl.video import EvalVideo


def resumed_due_point(counters: dict[str, int], schedule: str, interval: int) -> int:
    """The simulator step at which a run next evaluates (``schedule="eval"``) or saves (``"save"``).

    A new run: ``interval``. A resumed one keeps its saved due point while the
    interval is the saved one; after a change, it is the first multiple of the
    new interval past the run's steps, or those steps themselves (due at once)
    when an evaluation under the old interval was due and cut short by the stop
    (0, unused, for a new interval of 0: only the final evaluation).
    """
    if f"next_{schedule}" not in counters:
        return interval
    due, steps = counters[f"next_{schedule}"], counters["env_steps"]
    saved_interval = counters.get(f"{schedule}_interval", interval)  # checkpoints that predate it: unchanged
    if saved_interval == interval:
        return due
    if not interval:
        return 0
    if saved_interval and due <= steps:
        return steps
    return (steps // interval + 1) * interval


class DSRLCallback(BaseCallback):
    """Counts simulator steps and, by that count, evaluates, saves and stops.

    Records with every log dump ``train/env_steps`` (simulator steps, chunk
    included), ``train/gradient_steps``, ``train/env_steps_per_s`` (since the
    first gradient step; before it, since the start) and, over
    the last 100 finished training episodes, ``train/episode_return`` and
    ``train/success_rate``; after each evaluation ``eval/success_rate``,
    ``eval/return_mean`` and ``eval/return_std`` (the actor's mean noise) and,
    with ``eval_stochastic``, the same as ``eval/stochastic_*`` (sampled noise).

    :param eval_env: evaluation VecEnv, in the model's action space
    :param total_env_steps: stop once this many simulator steps have run
    :param eval_interval: simulator steps between evaluations (0: only the final one)
    :param eval_episodes: episodes per evaluation
    :param eval_stochastic: also evaluate with noise sampled from the actor
    :param save_interval: simulator steps between checkpoints (0: only at the end)
    :param checkpointer: writes the checkpoints
    :param seed: evaluation episodes are seeded from it, identically each time
    :param wandb_run_id: stored with each checkpoint so that a resumed run continues the W&B run
    :param video: records an evaluation episode after some evaluations (None: never)
    :param resume: the checkpoint a resumed run continues from (its counters are restored)
    :param progress_bar: show a console bar of simulator steps with steps/s and the latest evaluation
    :param stop_request: when it records a signal, stop after the current step with a checkpoint and no
        final evaluation (``stopped_by`` then names the signal); an evaluation under way is abandoned
        unlogged and runs again first thing after a resume
    :param on_checkpoint: called with the model's path and the env steps after each checkpoint
        (e.g. :func:`~dsrl.run_logging.log_file_artifact` of kind ``model``)
    """

    def __init__(
        self,
        eval_env: VecEnv,
        total_env_steps: int,
        eval_interval: int,
        eval_episodes: int,
        eval_stochastic: bool,
        save_interval: int,
        checkpointer: Checkpointer,
        seed: int,
        wandb_run_id: str | None = None,
        video: EvalVideo | None = None,
        resume: Resume | None = None,
        progress_bar: bool = True,
        stop_request: StopRequest | None = None,
        on_checkpoint: Callable[[str, int], None] | None = None,
    ):
        super().__init__()
        self.eval_env = eval_env
        self.total_env_steps = total_env_steps
        self.eval_interval = eval_interval
        self.eval_episodes = eval_episodes
        self.eval_stochastic = eval_stochastic
        self.save_interval = save_interval
        self.checkpointer = checkpointer
        self.seed = seed
        self.wandb_run_id = wandb_run_id
        self.video = video
        counters = resume.counters if resume else {}
        self.env_steps = counters.get("env_steps", 0)
        self.next_eval = resumed_due_point(counters, "eval", eval_interval)
        self.next_save = resumed_due_point(counters, "save", save_interval)
        self.n_evals = counters.get("n_evals", 0)
        self.last_eval: dict[str, float] = {}
        self.last_eval_step = self.last_save_step = -1
        self.show_progress = progress_bar
        self.bar: tqdm | None = None
        self.stop_request = stop_request
        self.stopped_by: signal.Signals | None = None
        self.on_checkpoint = on_checkpoint

    def counters(self) -> dict[str, int]:
        """What a resumed run needs to continue counting, evaluating and saving where this one stopped;
        ``stopped`` is 1 when a stop request ended the run (before its final evaluation)."""
        return dict(
            env_steps=self.env_steps,
            next_eval=self.next_eval,
            next_save=self.next_save,
            n_evals=self.n_evals,
            eval_interval=self.eval_interval,
            save_interval=self.save_interval,
            stopped=int(self.stopped_by is not None),
        )

    def _on_training_start(self) -> None:
        self.start, self.learning_began = (time.perf_counter(), self.env_steps), False
        if self.show_progress:
            self.bar = tqdm(total=self.total_env_steps, initial=self.env_steps, unit="env step", dynamic_ncols=True)

    def _on_step(self) -> bool:
        new_steps = sum(int(info.get("sim_steps", 0)) for info in self.locals["infos"])
        self.env_steps += new_steps
        if self.bar is not None:
            self.bar.update(new_steps)
        self.record_training_metrics()
        if self.stop_requested():
            return self.stop()
        if self.eval_interval and self.env_steps >= self.next_eval:
            if not self.run_evaluation(stoppable=True):
                return self.stop()
            self.next_eval += self.eval_interval
        if self.save_interval and self.env_steps >= self.next_save:
            self.next_save += self.save_interval
            self.save()
        return self.env_steps < self.total_env_steps

    def record_training_metrics(self) -> None:
        if not self.learning_began and self.model._n_updates > 0:
            self.learning_began, self.start = True, (time.perf_counter(), self.env_steps)
        elapsed = time.perf_counter() - self.start[0]
        self.logger.record("train/env_steps", self.env_steps)
        self.logger.record("train/gradient_steps", self.model._n_updates)
        self.logger.record("train/env_steps_per_s", (self.env_steps - self.start[1]) / max(elapsed, 1e-9))
        if self.model.ep_info_buffer:
            self.logger.record("train/episode_return", float(np.mean([e["r"] for e in self.model.ep_info_buffer])))
        if self.model.ep_success_buffer:
            self.logger.record("train/success_rate", float(np.mean(self.model.ep_success_buffer)))

    def stop_requested(self) -> bool:
        return self.stop_request is not None and self.stop_request.requested()

    def stop(self) -> bool:
        self.stopped_by = self.stop_request.signal
        return False

    def run_evaluation(self, stoppable: bool = False) -> bool:
        """Evaluate and log; False (nothing logged) when ``stoppable`` and a stop request cut it short."""
        stop = self.stop_requested if stoppable else None
        try:
            results = {"": evaluate(self.model, self.eval_env, self.eval_episodes, True, self.seed, stop)}
            if self.eval_stochastic:
                results["stochastic_"] = evaluate(self.model, self.eval_env, self.eval_episodes, False, self.seed, stop)
        except EvaluationStopped:
            return False
        self.last_eval_step = self.env_steps
        self.n_evals += 1
        self.last_eval = results[""]
        for prefix, result in results.items():
            for key, value in result.items():
                self.logger.record(f"eval/{prefix}{key}", value)
        if self.video is not None:
            self.video.after_evaluation(self.model, self.n_evals, self.env_steps)
        if self.bar is not None:
            self.bar.set_postfix({f"eval {k}": f"{v:.3g}" for k, v in self.last_eval.items() if k != "return_std"})
        self.record_training_metrics()
        self.logger.dump(self.num_timesteps)
        self.record_training_metrics()  # the dump cleared them; SB3 may dump its own stats in this same step
        return True

    def save(self) -> None:
        model_path = self.checkpointer.save(self.model, self.counters(), self.wandb_run_id)
        self.last_save_step = self.env_steps
        if self.on_checkpoint is not None:
            self.on_checkpoint(model_path, self.env_steps)

    def _on_training_end(self) -> None:
        final_evaluation = self.stopped_by is None and self.last_eval_step != self.env_steps
        if final_evaluation:
            self.run_evaluation()
        if final_evaluation or self.last_save_step != self.env_steps:  # else the last step's checkpoint holds it all
            self.save()
        if self.bar is not None:
            self.bar.close()
