"""Behaviour cloning of a base policy (diffusion or flow) from normalised demonstrations."""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch

from dsrl.base_policies.base import NoisePolicy
from dsrl.data.observation_histories import ObservationHistories


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """Learning-rate factor: linear warm-up over ``warmup`` steps, then cosine decay to 0.1."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


class BehaviourCloning:
    """Train ``policy`` on (obs (N, cond_dim), action chunks (N, chunk, action_dim)), both normalised.

    AdamW with warm-up + cosine learning rate over ``steps`` steps; an
    exponential moving average of the weights is kept in ``ema`` (DPPO's
    ``ema``), ``policy`` holds the raw weights. :meth:`state_dict` holds
    everything a continuation needs (weights, optimiser, schedule, both random
    streams), so a run stopped and resumed from it takes the same steps as one
    that was never stopped.

    :param policy: the policy to train (its ``loss(obs, actions)`` is minimised)
    :param obs: conditioning observations, (N, cond_dim), or the histories that gather them (on ``device``)
    :param actions: the action chunks that followed them, (N, chunk, action_dim)
    :param steps: gradient steps of the whole run (the schedule's length)
    :param batch_size: pairs per step, drawn uniformly with replacement
    :param lr: AdamW peak learning rate
    :param weight_decay: AdamW weight decay
    :param warmup_steps: linear warm-up steps before the cosine decay to 10% of ``lr``
    :param ema_decay: decay of the weight average
    :param seed: seeds the batch sampling and torch's global generator (the loss's noise)
    :param device: where the policy and the data live
    """

    def __init__(
        self,
        policy: NoisePolicy,
        obs: np.ndarray | ObservationHistories,
        actions: np.ndarray,
        steps: int,
        batch_size: int = 256,
        lr: float = 1e-3,
        weight_decay: float = 1e-6,
        warmup_steps: int = 100,
        ema_decay: float = 0.995,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ):
        if len(obs) != len(actions):
            raise ValueError(f"obs has {len(obs)} rows but actions has {len(actions)}")
        self.batch_size, self.ema_decay, self.device = batch_size, ema_decay, torch.device(device)
        self.step = 0
        self.generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        self.policy = policy.to(device).train()
        self.ema = copy.deepcopy(policy).requires_grad_(False).eval()
        self.obs = (
            obs if isinstance(obs, ObservationHistories) else torch.as_tensor(obs, dtype=torch.float32, device=device)
        )
        self.actions = torch.as_tensor(actions, dtype=torch.float32, device=device)
        self.optimizer = torch.optim.AdamW(policy.parameters(), lr=lr, weight_decay=weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: warmup_cosine(s, steps, warmup_steps)
        )

    def train_step(self) -> float:
        """One gradient step and EMA update; returns the batch's loss."""
        idx = torch.randint(0, len(self.obs), (self.batch_size,), generator=self.generator).to(self.device)
        loss = self.policy.loss(self.obs[idx], self.actions[idx])
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        with torch.no_grad():
            for p_ema, p in zip(self.ema.parameters(), self.policy.parameters()):
                p_ema.lerp_(p, 1.0 - self.ema_decay)
        self.step += 1
        return loss.item()

    def state_dict(self) -> dict[str, Any]:
        """``step``, ``model``, ``ema``, ``optimizer``, ``scheduler`` and the random streams' states."""
        rng = {"batches": self.generator.get_state(), "torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "step": self.step,
            "model": self.policy.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`'s output (of a run with the same data and settings)."""
        self.step = state["step"]
        self.policy.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["rng"]["batches"])
        torch.set_rng_state(state["rng"]["torch"])
        if self.device.type == "cuda" and "cuda" in state["rng"]:
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
