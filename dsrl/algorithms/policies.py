"""SB3 policies of DSRL's agents.

- :class:`DSRLSACPolicy`: SB3's ``SACPolicy`` with LayerNorm MLPs and a batched
  critic ensemble; DSRL-SAC runs plain SB3 ``SAC`` with it.
- :class:`NoiseAliasingPolicy`: DSRL-NA's networks. The actor acts in the
  noise space; ``critic``/``critic_target`` are Q_A over real action chunks;
  ``noise_critic`` is Q_W over noise, distilled from Q_A.
"""

from __future__ import annotations

from typing import Any

from gymnasium import spaces
from stable_baselines3.common.type_aliases import Schedule
from stable_baselines3.sac.policies import SACPolicy

from dsrl.algorithms.networks import EnsembleCritic, LayerNormActor


class DSRLSACPolicy(SACPolicy):
    """SACPolicy whose actor and critics use LayerNorm hidden layers; critics run as one ensemble.

    :param layer_norm: LayerNorm after each hidden Linear of actor and critics
    :param target_critics: REDQ's in-target subset: the target critic gives the TD target the values of this many
        of its ``n_critics`` members, drawn at random on every call (the target then combines those); 0: all
    :param actor_zero_init: the actor's output layers start at zero (:class:`LayerNormActor`'s ``zero_init``):
        its untrained mean noise is 0 in every state
    (other parameters: SB3's :class:`SACPolicy`)
    """

    def __init__(
        self, *args, layer_norm: bool = True, target_critics: int = 0, actor_zero_init: bool = False, **kwargs
    ):
        n_critics = kwargs.get("n_critics", 2)
        if not 0 <= target_critics <= n_critics:
            raise ValueError(f"target_critics={target_critics} must lie in [0, n_critics={n_critics}]")
        self.layer_norm = layer_norm
        self.target_critics = target_critics
        self.actor_zero_init = actor_zero_init
        super().__init__(*args, **kwargs)

    def _build(self, lr_schedule: Schedule) -> None:
        super()._build(lr_schedule)
        self.critic_target.subset_size = self.target_critics

    def make_actor(self, features_extractor=None) -> LayerNormActor:
        kwargs = self._update_features_extractor(self.actor_kwargs, features_extractor)
        return LayerNormActor(**kwargs, layer_norm=self.layer_norm, zero_init=self.actor_zero_init).to(self.device)

    def make_critic(self, features_extractor=None, action_space: spaces.Box | None = None) -> EnsembleCritic:
        """A critic ensemble; ``action_space`` overrides the policy's (DSRL-NA's Q_A scores real chunks)."""
        kwargs = self._update_features_extractor(self.critic_kwargs, features_extractor)
        if action_space is not None:
            kwargs["action_space"] = action_space
        return EnsembleCritic(**kwargs, layer_norm=self.layer_norm).to(self.device)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return dict(
            super()._get_constructor_parameters(),
            layer_norm=self.layer_norm,
            target_critics=self.target_critics,
            actor_zero_init=self.actor_zero_init,
        )


class NoiseAliasingPolicy(DSRLSACPolicy):
    """DSRL-NA's actor (noise space), action critic Q_A (+ target) and noise critic Q_W.

    :param observation_space: observation space
    :param action_space: the env's real action-chunk space (what Q_A scores)
    :param lr_schedule: learning-rate schedule
    :param noise_space: the noise space the actor acts in (``Box(±action_magnitude)``)
    (other parameters: :class:`DSRLSACPolicy`)
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        noise_space: spaces.Box,
        **kwargs,
    ):
        self.real_action_space = action_space
        super().__init__(observation_space, noise_space, lr_schedule, **kwargs)

    def _build(self, lr_schedule: Schedule) -> None:
        lr = lr_schedule(1)
        self.actor = self.make_actor()
        self.actor.optimizer = self.optimizer_class(self.actor.parameters(), lr=lr, **self.optimizer_kwargs)
        self.critic = self.make_critic(action_space=self.real_action_space)
        self.critic_target = self.make_critic(action_space=self.real_action_space)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.subset_size = self.target_critics
        self.critic_target.set_training_mode(False)
        self.critic.optimizer = self.optimizer_class(self.critic.parameters(), lr=lr, **self.optimizer_kwargs)
        self.noise_critic = self.make_critic()
        self.noise_critic.optimizer = self.optimizer_class(
            self.noise_critic.parameters(), lr=lr, **self.optimizer_kwargs
        )

    def set_training_mode(self, mode: bool) -> None:
        super().set_training_mode(mode)
        self.noise_critic.set_training_mode(mode)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(action_space=self.real_action_space, noise_space=self.action_space)
        return data
