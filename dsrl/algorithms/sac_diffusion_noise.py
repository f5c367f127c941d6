"""DSRL-NA (noise aliasing): SAC in the base policy's noise space with a critic on real actions."""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from stable_baselines3 import SAC
from stable_baselines3.common.type_aliases import GymEnv

from dsrl.algorithms.distillation_buffer import DistillationReplayBuffer
from dsrl.algorithms.graphed_step import GraphedStep, check_compiler_works, compiled, in_bf16_autocast
from dsrl.algorithms.policies import NoiseAliasingPolicy
from dsrl.base_policies.base import NoisePolicy
from dsrl.envs.noise_space import NoiseBox, NoiseExpansion

COMBINE_TYPES = ("min", "mean")


def combine(q_values: torch.Tensor, how: str) -> torch.Tensor:
    """Combine an ensemble's values (n, B, 1) into (B, 1) by ``min`` or ``mean``."""
    return q_values.min(dim=0).values if how == "min" else q_values.mean(dim=0)


def parameters(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The tensors ``optimizer`` updates, in its order."""
    return [p for group in optimizer.param_groups for p in group["params"]]


def batches(tensors: Sequence[torch.Tensor], n: int, batch_size: int) -> Iterator[tuple[torch.Tensor, ...]]:
    """``n`` consecutive batches of ``batch_size`` rows of every tensor (n * batch_size rows each), zipped."""
    return zip(*(t.view(n, batch_size, *t.shape[1:]).unbind(0) for t in tensors))


def step_optimizers(optimizers: list[torch.optim.Optimizer], gradients: Sequence[torch.Tensor]) -> None:
    """Step each optimizer with ``gradients``: all optimizers' :func:`parameters`' gradients, concatenated."""
    remaining = iter(gradients)
    for optimizer in optimizers:
        for parameter, gradient in zip(parameters(optimizer), remaining):
            parameter.grad = gradient
        optimizer.step()


class SACDiffusionNoise(SAC):
    """DSRL-NA: steer a frozen diffusion/flow policy by learning the noise it denoises.

    The environment acts in real action chunks (``env.action_space``, flattened
    (chunk * action_dim,), normalised to [-1, 1]) and the replay buffer stores
    them. Each gradient step trains

    - Q_A(s, a) (``critic``) on stored chunks, with the TD target
      ``r + γ (1 - d) [combine_i Q_A,i'(s', π_dp(s', w')) - α log π_W(w'|s')]``,
      where w' comes from the noise actor;
    - the actor π_W(w | s) against Q_W, SAC-style, in ``Box(±action_magnitude)``.

    After the ``gradient_steps`` of a ``train`` call, Q_W (``noise_critic``) is
    distilled from Q_A for ``noise_critic_grad_steps`` steps: for noise
    w ~ N(0, I) clipped to ±``action_magnitude`` (the range the actor can
    output), each Q_W,i(s, w) regresses onto Q_A,i(s, π_dp(s, w)).

    ``train/noise_critic_gap`` logs, on each gradient step's next states,
    ``combine Q_W(s', w') - combine Q_A'(s', π_dp(s', w'))`` at the actor's
    sampled noise w' (the TD target already computes all of it but Q_W),
    averaged over the update: a gap that grows positive means the actor has
    found noise where Q_W overrates what the base policy makes of it.

    Each gradient step computes all its gradients first (each of its losses
    reads the parameters as they were before the step), then steps the
    optimizers; with ``autocast_bf16`` they run under bfloat16 autocast
    (:func:`in_bf16_autocast`), with ``torch_compile`` they are compiled
    (:func:`compiled`), and on CUDA with ``cuda_graphs`` they run as captured
    CUDA graphs (:class:`GraphedStep`), the optimizer and polyak steps eagerly.

    :param policy: policy class (``NoiseAliasingPolicy`` or its name "NoiseAliasingPolicy")
    :param env: VecEnv of action-chunk envs
    :param base_policy: the frozen noise policy π_dp; not saved with the model
        (pass it again to :meth:`load`)
    :param action_magnitude: bound of the noise action space
    :param noise_critic_grad_steps: distillation steps of Q_W per ``train`` call
    :param critic_backup_combine_type: ``min`` or ``mean`` over the critic ensemble
        in the TD target (and in the actor's objective unless ``actor_combine_type``)
    :param actor_combine_type: ``min`` or ``mean`` over the Q_W ensemble in the
        actor's objective; None: ``critic_backup_combine_type`` (the authors').
        REDQ takes the min over a random subset in the target
        (``policy_kwargs`` ``target_critics``) and the mean here
    :param backup_entropy: subtract the entropy term in the TD target
    :param kl_to_base_noise: the term ``ent_coef`` weighs (actor loss, TD target,
        coefficient loss) becomes a sample of KL(π(·|s) ‖ N(0, I)), the
        divergence of the actor's noise from the base policy's:
        log π(w|s) − log N(w; 0, I) of the unscaled noise w (±``action_magnitude``),
        instead of SAC's log π(w|s) of the noise scaled to [-1, 1] (False, the
        authors'); the actor is then held near the noise the base policy was
        trained on rather than pushed to spread, and ``target_entropy`` reads as
        minus the target KL in nats
    :param kl_prior_noise_scale: with ``kl_to_base_noise``, the KL's prior is
        N(0, s² I), the base policy's noise times s (1: its own noise; below 1:
        a lower temperature, which can succeed more than the base policy's own
        noise, see docs/results.md); the actor is held near it instead
    :param precompute_distillation: denoise one distillation pair per stored
        transition once, in batches (:class:`DistillationReplayBuffer`), instead
        of a fresh batch on every distillation step (False, the authors' way);
        faster, but each state keeps a single noise sample, which lets the actor
        find noise where Q_W overrates the base policy's chunks
    :param overlap_env_steps: right after storing a transition, choose the next
        chunks (with the actor as it is before the update) and start the envs'
        step (``env`` must be a :class:`~dsrl.envs.prefetch.PrefetchVecEnv`):
        subprocess simulators step while the learner trains; the played chunks
        lag the actor by one update
    :param cuda_graphs: on a CUDA device, replay each gradient computation (DDIM
        passes included) as a CUDA graph; no effect on other devices
    :param torch_compile: compile each gradient computation (DDIM passes, losses
        and their backward) with ``torch.compile``: fewer, fused kernels, the
        same maths up to float rounding; the first ``train`` call compiles
        (about half a minute); with ``cuda_graphs`` the graphs replay the
        compiled kernels
    :param autocast_bf16: run each gradient computation (networks, DDIM passes,
        losses, backward) under bfloat16 autocast: matmuls in bfloat16, losses
        and reductions in float32, parameters and optimizer state float32;
        acting and evaluation stay float32
    :param noise_action_dim: the actor's and Q_W's noise dimension k (low-dimensional
        steering, expanded to the base policy's noise by :class:`NoiseExpansion`); <= 0: the full
        noise_steps * action_dim noise
    :param noise_expansion: ``tile`` or ``projection`` (see :class:`NoiseExpansion`)
    :param kwargs: SB3 ``SAC`` arguments (``gradient_steps`` is the update-to-data ratio)
    """

    policy_aliases = {"NoiseAliasingPolicy": NoiseAliasingPolicy}

    def __init__(
        self,
        policy: str | type[NoiseAliasingPolicy],
        env: GymEnv | str,
        base_policy: Optional[NoisePolicy] = None,
        action_magnitude: float = 1.5,
        noise_critic_grad_steps: int = 10,
        critic_backup_combine_type: str = "min",
        actor_combine_type: Optional[str] = None,
        backup_entropy: bool = True,
        kl_to_base_noise: bool = False,
        kl_prior_noise_scale: float = 1.0,
        precompute_distillation: bool = False,
        cuda_graphs: bool = True,
        torch_compile: bool = False,
        autocast_bf16: bool = False,
        overlap_env_steps: bool = False,
        noise_action_dim: int = 0,
        noise_expansion: str = "tile",
        _init_setup_model: bool = True,
        **kwargs: Any,
    ):
        if critic_backup_combine_type not in COMBINE_TYPES:
            raise ValueError(f"critic_backup_combine_type={critic_backup_combine_type!r} is not one of {COMBINE_TYPES}")
        if actor_combine_type not in (None, *COMBINE_TYPES):
            raise ValueError(f"actor_combine_type={actor_combine_type!r} is not None or one of {COMBINE_TYPES}")
        if action_magnitude <= 0:
            raise ValueError(f"action_magnitude={action_magnitude} must be > 0")
        if kl_prior_noise_scale <= 0:
            raise ValueError(f"kl_prior_noise_scale={kl_prior_noise_scale} must be > 0")
        if kwargs.get("action_noise") is not None:
            raise ValueError("action_noise is not supported: DSRL-NA explores through the SAC actor's noise")
        if kwargs.get("n_steps", 1) != 1:
            raise ValueError(
                f"n_steps={kwargs['n_steps']} is not supported: DSRL-NA's TD target discounts each stored chunk once"
            )
        super().__init__(policy, env, _init_setup_model=False, **kwargs)
        self.base_policy = base_policy
        self.action_magnitude = float(action_magnitude)
        self.noise_critic_grad_steps = noise_critic_grad_steps
        self.critic_backup_combine_type = critic_backup_combine_type
        self.actor_combine_type = actor_combine_type
        self.backup_entropy = backup_entropy
        self.kl_to_base_noise = kl_to_base_noise
        self.kl_prior_noise_scale = float(kl_prior_noise_scale)
        self.precompute_distillation = precompute_distillation
        self.cuda_graphs = cuda_graphs
        self.torch_compile = torch_compile
        self.autocast_bf16 = autocast_bf16
        self.overlap_env_steps = overlap_env_steps
        self._launched: np.ndarray | None = None
        self.noise_action_dim = noise_action_dim
        self.noise_expansion = noise_expansion
        if precompute_distillation:
            if kwargs.get("replay_buffer_class") not in (None, DistillationReplayBuffer):
                raise ValueError("precompute_distillation needs its own replay buffer class (DistillationReplayBuffer)")
            self.replay_buffer_class = DistillationReplayBuffer
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        if self.base_policy is None:
            raise ValueError("SACDiffusionNoise needs base_policy= (also when loading a saved model)")
        chunk_dim = self.base_policy.chunk * self.base_policy.action_dim
        if self.action_space.shape != (chunk_dim,):
            raise ValueError(
                f"env action shape {self.action_space.shape} does not match the base policy's "
                f"chunk {self.base_policy.chunk} x action_dim {self.base_policy.action_dim}"
            )
        if self.observation_space.shape != (self.base_policy.cond_dim,):
            raise ValueError(
                f"env observation shape {self.observation_space.shape} does not match the base policy's "
                f"cond_dim {self.base_policy.cond_dim}"
            )
        if self.cuda_graphs and self.device.type == "cuda" and not self.base_policy.graph_capturable:
            raise ValueError(
                f"cuda_graphs=True (train.cuda_graphs) on {self.device}, but {type(self.base_policy).__name__} cannot "
                "sample inside a CUDA graph: set train.cuda_graphs=false"
            )
        if self.torch_compile:
            check_compiler_works(self.device)
        self.expansion = NoiseExpansion(
            self.base_policy.noise_steps,
            self.base_policy.action_dim,
            self.noise_action_dim,
            self.noise_expansion,
            self.action_magnitude,
        ).to(self.device)
        self.noise_space = NoiseBox(self.action_magnitude, self.expansion.noise_dim)  # seeded by set_random_seed
        if self.precompute_distillation:
            self.replay_buffer_kwargs = dict(self.replay_buffer_kwargs, noise_dim=self.expansion.noise_dim)
        self.policy_kwargs = dict(self.policy_kwargs, noise_space=self.noise_space)
        auto_target_entropy = self.target_entropy == "auto"
        super()._setup_model()
        if auto_target_entropy:  # SB3's "auto" counts the env's actions (real chunks); the actor acts in noise
            self.target_entropy = -float(self.expansion.noise_dim)

    def set_random_seed(self, seed: int | None = None) -> None:
        """SB3's seeding, and the noise space's generator (the warm-up's base-policy noise) from the same seed."""
        super().set_random_seed(seed)
        if seed is not None:
            self.noise_space.seed(seed)

    def _create_aliases(self) -> None:
        super()._create_aliases()
        self.noise_critic = self.policy.noise_critic
        self.critic_parameters = list(self.critic.parameters())
        self.critic_target_parameters = list(self.critic_target.parameters())
        self._gradient_steps: tuple[Callable[..., tuple[torch.Tensor, ...]], ...] | None = None

    def denoise(self, obs: torch.Tensor, scaled_noise: torch.Tensor) -> torch.Tensor:
        """Real chunks (B, chunk * action_dim) for noise (B, noise_dim) scaled to [-1, 1] (the actor's output)."""
        return self.base_policy(obs, self.expansion(self.action_magnitude * scaled_noise)).reshape(obs.shape[0], -1)

    def predict_noise(
        self,
        observation: np.ndarray,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """The actor's noise (n, noise_dim) in ±``action_magnitude``."""
        return self.policy.predict(observation, state, episode_start, deterministic)

    def predict(
        self,
        observation: np.ndarray,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """Real action chunks (n, chunk * action_dim): the actor's noise denoised by the base policy."""
        noise, state = self.predict_noise(observation, state, episode_start, deterministic)
        return self.chunks_for_noise(observation, noise), state

    def chunks_for_noise(self, observation: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """Denoise unscaled noise (n, noise_dim) under observations (n, cond_dim) or (cond_dim,)."""
        obs = torch.as_tensor(np.asarray(observation), dtype=torch.float32, device=self.device)
        single = obs.ndim == 1
        obs = obs.view(-1, self.base_policy.cond_dim)
        scaled = torch.as_tensor(np.asarray(noise), dtype=torch.float32, device=self.device).view(len(obs), -1)
        chunks = self.denoise(obs, scaled / self.action_magnitude).cpu().numpy()
        return chunks[0] if single else chunks

    def _sample_action(self, learning_starts: int, action_noise=None, n_envs: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """The launched step's chunks when ``overlap_env_steps`` started one and the env still holds it (a reset,
        as a new ``learn()`` makes, discards it), else :meth:`choose_chunks`'."""
        launched, self._launched = self._launched, None
        if launched is not None and getattr(self.env, "launched", None) is launched:
            return launched, launched
        chunks = self.choose_chunks(learning_starts, n_envs)
        return chunks, chunks

    def choose_chunks(self, learning_starts: int, n_envs: int) -> np.ndarray:
        """Chunks (n_envs, chunk_dim) for ``_last_obs``: base-policy noise (N(0, I) clipped) during warm-up, then
        the actor's, denoised."""
        if self.num_timesteps < learning_starts:
            noise = np.stack([self.noise_space.sample() for _ in range(n_envs)])
        else:
            noise, _ = self.predict_noise(self._last_obs, deterministic=False)
        return self.chunks_for_noise(self._last_obs, noise)

    def _store_transition(self, *args: Any, **kwargs: Any) -> None:
        """SB3's, then, with ``overlap_env_steps``, the next step launched (chunks chosen before the update)."""
        super()._store_transition(*args, **kwargs)
        if self.overlap_env_steps:
            launch = getattr(self.env, "launch", None)
            if launch is None:
                raise ValueError("overlap_env_steps=True needs the env wrapped in dsrl.envs.prefetch.PrefetchVecEnv")
            self._launched = self.choose_chunks(self.learning_starts, self.env.num_envs)
            launch(self._launched)

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        self.policy.set_training_mode(True)
        optimizers = [self.critic.optimizer, self.actor.optimizer]
        if self.ent_coef_optimizer is not None:
            optimizers.append(self.ent_coef_optimizer)
        self._update_learning_rate(optimizers + [self.noise_critic.optimizer])
        if self._gradient_steps is None:
            self._gradient_steps = self.gradient_steps_to_run()
        sac_gradients, distillation_gradients = self._gradient_steps

        data = self.replay_buffer.sample(batch_size * gradient_steps, env=self._vec_normalize_env)
        sac_stats = []
        for gradient_step, batch in enumerate(batches(data[:5], gradient_steps, batch_size)):
            *gradients, stats = sac_gradients(*batch)
            sac_stats.append(stats.clone())
            step_optimizers(optimizers, gradients)
            if gradient_step % self.target_update_interval == 0:
                with torch.no_grad():
                    torch._foreach_lerp_(self.critic_target_parameters, self.critic_parameters, self.tau)

        if self.precompute_distillation:
            self.pair_new_transitions()
        n_distill = self.noise_critic_grad_steps
        distillation_losses = []
        for batch in batches(self._distillation_data(batch_size * n_distill), n_distill, batch_size):
            *gradients, loss = distillation_gradients(*batch)
            distillation_losses.append(loss.clone())
            step_optimizers([self.noise_critic.optimizer], gradients)

        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        means = torch.stack(sac_stats).mean(0).tolist() if sac_stats else []
        regulariser = "kl_to_base_noise" if self.kl_to_base_noise else "entropy"
        names = ["ent_coef", "actor_loss", "critic_loss", "q_value", "noise_critic_gap", regulariser, "ent_coef_loss"]
        for name, value in zip(names, means):
            self.logger.record(f"train/{name}", value)
        if distillation_losses:
            self.logger.record("train/noise_critic_loss", torch.stack(distillation_losses).mean().item())

    def gradient_steps_to_run(self) -> tuple[Callable[..., tuple[torch.Tensor, ...]], ...]:
        """:meth:`_sac_gradients` and :meth:`_distillation_gradients` as ``train`` runs them: in bfloat16 autocast
        with ``autocast_bf16``, compiled with ``torch_compile``, then replayed as CUDA graphs with ``cuda_graphs`` on a
        CUDA device."""
        steps: tuple[Callable[..., tuple[torch.Tensor, ...]], ...] = (self._sac_gradients, self._distillation_gradients)
        if self.autocast_bf16:
            steps = tuple(in_bf16_autocast(step, self.device.type) for step in steps)
        if self.torch_compile:
            steps = tuple(compiled(step) for step in steps)
        if self.cuda_graphs and self.device.type == "cuda":
            steps = tuple(GraphedStep(step) for step in steps)
        return steps

    def _sac_gradients(
        self,
        obs: torch.Tensor,
        actions: torch.Tensor,
        next_obs: torch.Tensor,
        dones: torch.Tensor,
        rewards: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        """One gradient step's gradients, computed before any of its optimizer steps.

        Returns the gradients of Q_A's parameters, the actor's, and log α's
        (when learnt), in their optimizers' order, then the stats (6 or 7,):
        α, actor loss, critic loss, the mean of Q_A over the batch and the
        ensemble, ``noise_critic_gap``, what α weighs (the
        batch's mean KL sample with ``kl_to_base_noise``, else the entropy
        estimate −mean log π of the noise scaled to [-1, 1]) [, α loss]. A batch of
        B transitions: obs/next_obs (B, obs_dim), actions (B, chunk_dim),
        dones/rewards (B, 1). No host round trips (it may be a CUDA graph).
        """
        how = self.critic_backup_combine_type
        noise_pi, log_prob = self.actor.action_log_prob(obs)
        log_prob = self.regularised_log_prob(noise_pi, log_prob)
        learnt = self.ent_coef_optimizer is not None
        ent_coef = torch.exp(self.log_ent_coef.detach()) if learnt else self.ent_coef_tensor

        with torch.no_grad():
            next_noise, next_log_prob = self.actor.action_log_prob(next_obs)
            next_log_prob = self.regularised_log_prob(next_noise, next_log_prob)
            next_q = combine(self.critic_target.all_q(next_obs, self.denoise(next_obs, next_noise)), how)
            gap = (combine(self.noise_critic.all_q(next_obs, next_noise), how) - next_q).mean()
            if self.backup_entropy:
                next_q = next_q - ent_coef * next_log_prob
            target_q = rewards + (1 - dones) * self.gamma * next_q

        current_q = self.critic.all_q(obs, actions)
        critic_loss = (
            0.5 * F.mse_loss(current_q, target_q.expand_as(current_q), reduction="none").mean(dim=(1, 2)).sum()
        )
        actor_how = self.actor_combine_type or how
        actor_loss = (ent_coef * log_prob - combine(self.noise_critic.all_q(obs, noise_pi), actor_how)).mean()
        losses = [(critic_loss, self.critic.optimizer), (actor_loss, self.actor.optimizer)]
        regulariser = log_prob.detach().mean()
        stats = [ent_coef.reshape(()), actor_loss.detach(), critic_loss.detach(), current_q.detach().mean(), gap]
        stats.append(regulariser if self.kl_to_base_noise else -regulariser)
        if learnt:
            ent_coef_loss = -(self.log_ent_coef * (log_prob + self.target_entropy).detach()).mean()
            losses.append((ent_coef_loss, self.ent_coef_optimizer))
            stats.append(ent_coef_loss.detach())
        # No loss depends on another's parameters, so one backward pass of their sum gives each its own gradients.
        total = sum(loss for loss, _ in losses)
        gradients = torch.autograd.grad(total, [p for _, optimizer in losses for p in parameters(optimizer)])
        return (*gradients, torch.stack(stats))

    def regularised_log_prob(self, scaled_noise: torch.Tensor, log_prob: torch.Tensor) -> torch.Tensor:
        """What ``ent_coef`` weighs, (B, 1), for the actor's noise (B, k) scaled to [-1, 1] and its log π (B,).

        log π(w|s) (SAC's), or with ``kl_to_base_noise`` the KL sample
        log π(w|s) − log N(w; 0, s² I) of the unscaled noise w = action_magnitude x scaled,
        s = ``kl_prior_noise_scale`` (log π of w is that of the scaled noise minus k log action_magnitude).
        With low-dimensional steering the prior is over the agent's k numbers, whose
        N(0, 1) marginals the expansion keeps (:class:`dsrl.envs.noise_space.NoiseExpansion`).
        """
        log_prob = log_prob.reshape(-1, 1)
        if not self.kl_to_base_noise:
            return log_prob
        k = scaled_noise.shape[-1]
        s = self.kl_prior_noise_scale
        noise = self.action_magnitude * scaled_noise
        log_prior = -0.5 * (noise / s).pow(2).sum(-1, keepdim=True) - k * math.log(s) - 0.5 * k * math.log(2 * math.pi)
        return log_prob - k * math.log(self.action_magnitude) - log_prior

    def distillation_noise(self, batch_size: int) -> torch.Tensor:
        """Noise w ~ N(0, I) clipped to ±action_magnitude, scaled to [-1, 1]: (batch_size, noise_dim)."""
        noise = torch.randn(batch_size, self.noise_space.shape[0], device=self.device)
        return noise.clamp(-self.action_magnitude, self.action_magnitude) / self.action_magnitude

    def pair_new_transitions(self, batch_size: int = 4096) -> None:
        """Denoise a distillation pair for every transition stored since the last call, in batches."""
        buffer = self.replay_buffer
        rows = buffer.unpaired_rows()
        if not len(rows):
            return
        shape = (len(rows), buffer.n_envs, -1)
        obs = torch.as_tensor(buffer.observations[rows].reshape(-1, self.base_policy.cond_dim), device=self.device)
        scaled = self.distillation_noise(len(obs))
        chunks = torch.cat([self.denoise(o, w) for o, w in zip(obs.split(batch_size), scaled.split(batch_size))])
        noise = (scaled * self.action_magnitude).cpu().numpy().reshape(shape)
        buffer.set_pairs(rows, noise, chunks.cpu().numpy().reshape(shape))

    def _distillation_data(self, n: int) -> tuple[torch.Tensor, ...]:
        """n observations (n, obs_dim) to distil on, with their stored scaled noise and chunks when precomputed."""
        if self.precompute_distillation:
            obs, noise, chunks = self.replay_buffer.sample_pairs(n)
            return obs, noise / self.action_magnitude, chunks
        return (self.replay_buffer.sample(n, env=self._vec_normalize_env).observations,)

    def _distillation_gradients(self, obs: torch.Tensor, *pair: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Gradients of Q_W's parameters, then the loss, of regressing Q_W(s, w) onto Q_A(s, π_dp(s, w)).

        ``pair`` is the stored (scaled noise (B, noise_dim), chunks (B, chunk_dim))
        for the observations (B, obs_dim), or empty: fresh noise, denoised here.
        No host round trips (it may be a CUDA graph).
        """
        if pair:
            scaled, chunks = pair
        else:
            scaled = self.distillation_noise(len(obs))
            chunks = self.denoise(obs, scaled)
        with torch.no_grad():
            target = self.critic.all_q(obs, chunks)
        prediction = self.noise_critic.all_q(obs, scaled)
        loss = 0.5 * F.mse_loss(prediction, target, reduction="none").mean(dim=(1, 2)).sum()
        return (*torch.autograd.grad(loss, parameters(self.noise_critic.optimizer)), loss.detach())

    def _excluded_save_params(self) -> list[str]:
        return super()._excluded_save_params() + [
            "base_policy",
            "noise_critic",
            "expansion",
            "critic_parameters",
            "critic_target_parameters",
            "_gradient_steps",
            "_launched",
        ]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts, variables = super()._get_torch_save_params()
        return state_dicts + ["noise_critic.optimizer"], variables
