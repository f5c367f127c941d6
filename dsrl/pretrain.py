"""Behaviour cloning of a base policy (diffusion or flow) from normalised demonstrations."""

from __future__ import annotations

import copy
import math
from typing import Callable, Optional

import numpy as np
import torch

from dsrl.base_policies.base import NoisePolicy


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """Learning-rate factor: linear warm-up over ``warmup`` steps, then cosine decay to 0.1."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def behaviour_clone(
    policy: NoisePolicy,
    obs: np.ndarray,
    actions: np.ndarray,
    steps: int,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 1e-6,
    warmup_steps: int = 100,
    ema_decay: float = 0.995,
    seed: int = 0,
    device: str | torch.device = "cpu",
    on_step: Optional[Callable[[int, float, NoisePolicy], None]] = None,
) -> NoisePolicy:
    """Train ``policy`` on (obs (N, cond_dim), action chunks (N, chunk, action_dim)), both normalised.

    AdamW with warm-up + cosine learning rate; an exponential moving average of
    the weights is kept and returned (DPPO's ``ema``). ``on_step(step, loss, ema)``
    is called after every step (``step`` counts from 1). ``policy`` itself
    holds the last raw weights.
    """
    if len(obs) != len(actions):
        raise ValueError(f"obs has {len(obs)} rows but actions has {len(actions)}")
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    policy.to(device).train()
    ema = copy.deepcopy(policy).requires_grad_(False).eval()
    obs_t = torch.as_tensor(obs, dtype=torch.float32, device=device)
    act_t = torch.as_tensor(actions, dtype=torch.float32, device=device)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, steps, warmup_steps))
    for step in range(steps):
        idx = torch.randint(0, len(obs_t), (batch_size,), generator=generator).to(device)
        loss = policy.loss(obs_t[idx], act_t[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), policy.parameters()):
                p_ema.lerp_(p, 1.0 - ema_decay)
        if on_step is not None:
            on_step(step + 1, loss.item(), ema)
    return ema.freeze()
