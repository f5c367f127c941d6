"""Evaluation videos: one episode rendered offscreen at every simulator step, saved as mp4 and logged to W&B.

MuJoCo picks its offscreen backend from ``MUJOCO_GL`` when it is first
imported, so :func:`find_renderer` probes the backends in subprocesses and
the run sets ``MUJOCO_GL`` before any simulator is built. Without a working
renderer a run logs one warning and trains on without videos.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from typing import Any, Callable

import imageio.v2 as imageio
import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from dsrl.files import write_atomic

log = logging.getLogger(__name__)

BACKENDS = ("egl", "osmesa")
PROBE = "import mujoco; context = mujoco.GLContext(16, 16); context.make_current(); context.free()"


def renderer_candidates() -> list[str]:
    """The MuJoCo backends to try: ``MUJOCO_GL`` if the user set it, else egl, then osmesa."""
    return [os.environ["MUJOCO_GL"]] if os.environ.get("MUJOCO_GL") else list(BACKENDS)


def find_renderer(candidates: list[str]) -> str | None:
    """The first of ``candidates`` that opens a MuJoCo offscreen context here (probed in subprocesses)."""
    for backend in candidates:
        probe = subprocess.run(
            [sys.executable, "-c", PROBE], env=dict(os.environ, MUJOCO_GL=backend), capture_output=True, timeout=120
        )
        if probe.returncode == 0:
            return backend
    return None


class EvalVideo:
    """Every ``every`` evaluations, records one episode of the agent's deterministic actions.

    Writes ``<directory>/eval_<env_steps>.mp4`` and logs it to W&B as
    ``eval/video``. If rendering or encoding fails, logs one warning naming
    the error and records nothing more.

    :param env: one env built with ``render=True`` (its infos carry ``frames``), in the model's action space
    :param every: evaluations between videos
    :param directory: where the mp4 files go
    :param fps: frames per second of the video (the simulator's control rate)
    :param wandb_run: W&B run to log to (None: files only)
    :param on_video: called with the video's path and the env steps after each saved video
        (e.g. :func:`~dsrl.run_logging.log_file_artifact` of kind ``video``)
    """

    def __init__(
        self,
        env: VecEnv,
        every: int,
        directory: str,
        fps: int,
        wandb_run: Any = None,
        on_video: Callable[[str, int], None] | None = None,
    ):
        self.env = env
        self.every = every
        self.directory = directory
        self.fps = fps
        self.wandb_run = wandb_run
        self.on_video = on_video
        self.enabled = True

    def record(self, agent: Any) -> np.ndarray:
        """Frames (T, H, W, 3) uint8 of one episode of ``agent``'s deterministic actions, one per simulator step."""
        obs = self.env.reset()
        frames: list[np.ndarray] = []
        done = False
        while not done:
            action, _ = agent.predict(obs, deterministic=True)
            obs, _, dones, infos = self.env.step(action)
            frames.extend(infos[0]["frames"])
            done = bool(dones[0])
        return np.asarray(frames, dtype=np.uint8)

    def save(self, agent: Any, path: str) -> str | None:
        """Record one episode of ``agent`` (anything with SB3's ``predict``) to ``path`` (mp4).

        :return: ``path``, or None when recording failed (then videos are off, with one warning)
        """
        if not self.enabled:
            return None
        try:
            frames = self.record(agent)
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            # macro_block_size=2: even frame sizes (PushT's 680x680) are kept as rendered, not rescaled with a warning
            write_atomic(
                path, lambda tmp: imageio.mimwrite(tmp, frames, fps=self.fps, format="FFMPEG", macro_block_size=2)
            )
        except Exception as exc:  # renderers fail in many ways (no display, no GL library, driver errors)
            self.enabled = False
            log.warning("evaluation videos are off from now on: recording failed (%s: %s)", type(exc).__name__, exc)
            return None
        return path

    def after_evaluation(self, model: BaseAlgorithm, n_evals: int, env_steps: int) -> str | None:
        """Record, save and log a video if this is every ``every``-th evaluation; returns the mp4 path."""
        if n_evals % self.every:
            return None
        path = self.save(model, os.path.join(self.directory, f"eval_{env_steps}.mp4"))
        if path and self.wandb_run is not None:
            import wandb

            self.wandb_run.log({"eval/video": wandb.Video(path, format="mp4"), "train/env_steps": env_steps})
        if path and self.on_video is not None:
            self.on_video(path, env_steps)
        return path
