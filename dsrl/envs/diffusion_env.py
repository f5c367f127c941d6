"""DSRL-SAC's environment: the action space is the base policy's noise space."""

from __future__ import annotations

import numpy as np
import torch
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn

from dsrl.base_policies.base import NoisePolicy
from dsrl.envs.noise_space import NoiseBox, NoiseExpansion


class DiffusionPolicyEnvWrapper(VecEnvWrapper):
    """Turns a chunked VecEnv into one whose actions are initial noise.

    Each noise action (n_envs, noise_dim) in ±``action_magnitude`` is expanded
    to the base policy's noise (:class:`NoiseExpansion`), denoised once under
    the current observations, and the resulting real chunk is played;
    ``info["action_chunk"]`` holds it.

    :param venv: VecEnv of :class:`~dsrl.envs.wrappers.ActionChunkWrapper` envs
    :param base_policy: frozen noise policy whose chunk and action sizes match ``venv``
    :param action_magnitude: bound of the noise action space
    :param noise_action_dim: noise_dim for low-dimensional steering; <= 0: chunk * action_dim
    :param noise_expansion: ``tile`` or ``projection``
    """

    def __init__(
        self,
        venv: VecEnv,
        base_policy: NoisePolicy,
        action_magnitude: float,
        noise_action_dim: int = 0,
        noise_expansion: str = "tile",
    ):
        chunk_dim = base_policy.chunk * base_policy.action_dim
        if venv.action_space.shape != (chunk_dim,):
            raise ValueError(
                f"env action shape {venv.action_space.shape} does not match the base policy's "
                f"chunk {base_policy.chunk} x action_dim {base_policy.action_dim}"
            )
        if venv.observation_space.shape != (base_policy.cond_dim,):
            raise ValueError(
                f"env observation shape {venv.observation_space.shape} does not match the base policy's "
                f"cond_dim {base_policy.cond_dim}"
            )
        expansion = NoiseExpansion(
            base_policy.noise_steps, base_policy.action_dim, noise_action_dim, noise_expansion, action_magnitude
        )
        super().__init__(venv, action_space=NoiseBox(action_magnitude, expansion.noise_dim))
        self.base_policy = base_policy
        self.expansion = expansion.to(base_policy.device)
        self._obs: np.ndarray | None = None
        self._chunks: np.ndarray | None = None

    def reset(self) -> np.ndarray:
        self._obs = self.venv.reset()
        return self._obs

    def step_async(self, actions: np.ndarray) -> None:
        policy = self.base_policy
        obs = torch.as_tensor(self._obs, dtype=torch.float32, device=policy.device)
        noise = torch.as_tensor(actions, dtype=torch.float32, device=policy.device)
        chunks = policy(obs, self.expansion(noise))
        self._chunks = chunks.reshape(len(actions), -1).cpu().numpy()
        self.venv.step_async(self._chunks)

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, dones, infos = self.venv.step_wait()
        for info, chunk in zip(infos, self._chunks):
            info["action_chunk"] = chunk
        self._obs = obs
        return obs, rewards, dones, infos
