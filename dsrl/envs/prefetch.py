"""A VecEnv whose next step can be started before the caller asks for it, so simulators and learner overlap."""

from __future__ import annotations

import numpy as np
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn


class PrefetchVecEnv(VecEnvWrapper):
    """``launch(actions)`` starts the next step now; the ``step(actions)`` that follows only waits for it.

    With subprocess envs the simulators then run while the caller works
    between the two calls (DSRL-NA trains there, see
    ``SACDiffusionNoise(overlap_env_steps=True)``). A ``reset`` with a
    launched step pending waits for that step and discards it.

    :param venv: the envs
    """

    def __init__(self, venv: VecEnv):
        super().__init__(venv)
        self.launched: np.ndarray | None = None

    def launch(self, actions: np.ndarray) -> None:
        """Start the step with ``actions`` (n_envs, action_dim); the next ``step`` must pass these same actions."""
        if self.launched is not None:
            raise RuntimeError("a launched step is still pending: step() must collect it first")
        self.venv.step_async(actions)
        self.launched = actions

    def step_async(self, actions: np.ndarray) -> None:
        if self.launched is None:
            self.venv.step_async(actions)
            return
        if actions is not self.launched:
            raise RuntimeError("step() was given other actions than the launched step's")
        self.launched = None

    def step_wait(self) -> VecEnvStepReturn:
        return self.venv.step_wait()

    def reset(self) -> VecEnvObs:
        if self.launched is not None:
            self.venv.step_wait()
            self.launched = None
        return self.venv.reset()
