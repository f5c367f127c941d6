"""Run checkpoints and resuming from a run directory.

A checkpoint at ``N`` simulator steps is, in ``<run_dir>/checkpoints/``:

- ``model_<N>.zip``: the SB3 model (networks, optimisers, entropy coefficient,
  ``num_timesteps`` and ``_n_updates``; the base policy is not in it);
- ``training_state_<N>.pt``: the callback's counters (simulator steps, next
  evaluation and save and their intervals, whether a stop ended the run), the
  W&B run id and the RNG states of python, numpy, torch and the training GPU;
- ``replay_buffer_<N>.pkl`` when replay buffers are saved (only the latest is kept; only the filled rows,
  see :mod:`dsrl.replay_files`);
- ``latest.json``, rewritten last and atomically, names the files of the
  newest complete checkpoint. A run killed at any moment therefore resumes
  from its last finished checkpoint; partial files are never named by it, and
  the resumed run deletes them (:meth:`Checkpointer.discard_uncommitted`).

``<run_dir>/config.yaml`` holds the run's resolved config; a resumed run must
agree with it on every setting in :data:`MUST_MATCH`.
"""

from __future__ import annotations

import json
import os
import random
import re
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from stable_baselines3.common.base_class import BaseAlgorithm

from dsrl.files import write_atomic, write_json
from dsrl.replay_files import save_replay_buffer
from dsrl.settings import CONFIG, NOT_SET, first_difference, selected_settings

LATEST = "latest.json"
CHECKPOINT_FILE = re.compile(r"(model|training_state|replay_buffer)_(\d+)\.(?:zip|pt|pkl)")
MUST_MATCH = (
    "algorithm",
    "env.suite",
    "env.name",
    "env.kwargs",
    "env.reward_offset",
    "env.n_envs",
    "env.max_episode_steps",
    "base_policy",
    "train",
)
"""Settings a resumed run must share with the run it continues (dotted config keys; a section means
each of its settings): the saved model keeps its own hyperparameters, so a changed one would be
ignored, and the replay buffer's shape depends on ``env.n_envs``."""
MAY_CHANGE = (
    "train.total_env_steps",
    "train.cuda_graphs",
    "train.torch_compile",
    "train.autocast_bf16",
    "train.overlap_env_steps",
)
"""Settings inside :data:`MUST_MATCH` that a resumed run may change (the length, and how fast it runs)."""


def rng_states(device: torch.device) -> dict[str, Any]:
    """Python's, numpy's and torch's generator states, and the training device's when it is a GPU (only that
    one: a run may resume on a machine with fewer GPUs)."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }


def set_rng_states(states: dict[str, Any], device: torch.device) -> None:
    """Restore :func:`rng_states`; the saved GPU state goes to ``device``, when training runs on a GPU."""
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if device.type != "cuda":
        return
    cuda = states["cuda"]
    if isinstance(cuda, list):  # checkpoints that saved every visible GPU's state
        index = torch.cuda.current_device() if device.index is None else device.index
        cuda = cuda[index] if index < len(cuda) else None
    if cuda is not None:
        torch.cuda.set_rng_state(cuda, device)


@dataclass
class Checkpointer:
    """Writes checkpoints of a run (see the module docstring).

    :param directory: ``<run_dir>/checkpoints``
    :param save_replay_buffer: also save the replay buffer (needed to resume
        without refilling it; as large as the buffer)
    :param keep: model checkpoints to keep (0: all)
    """

    directory: str
    save_replay_buffer: bool = True
    keep: int = 0

    def save(self, model: BaseAlgorithm, counters: dict[str, int], wandb_run_id: str | None) -> str:
        """Save a checkpoint at ``counters["env_steps"]`` simulator steps; returns the model path."""
        os.makedirs(self.directory, exist_ok=True)
        steps = counters["env_steps"]
        entry = {
            "env_steps": steps,
            "model": f"model_{steps}.zip",
            "training_state": f"training_state_{steps}.pt",
            "replay_buffer": f"replay_buffer_{steps}.pkl" if self.save_replay_buffer else None,
        }
        previous = self.latest()
        write_atomic(self.path(entry["model"]), model.save)
        state = {"counters": dict(counters), "wandb_run_id": wandb_run_id, "rng": rng_states(model.device)}
        write_atomic(self.path(entry["training_state"]), lambda tmp: torch.save(state, tmp))
        if entry["replay_buffer"]:
            write_atomic(self.path(entry["replay_buffer"]), partial(save_replay_buffer, model))
        write_json(self.path(LATEST), entry)
        if previous and previous.get("replay_buffer") and previous["replay_buffer"] != entry["replay_buffer"]:
            os.remove(self.path(previous["replay_buffer"]))
        self.prune()
        return self.path(entry["model"])

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def latest(self) -> dict[str, Any] | None:
        """The newest complete checkpoint's entry, or None before the first."""
        if not os.path.isfile(self.path(LATEST)):
            return None
        with open(self.path(LATEST)) as f:
            return json.load(f)

    def discard_uncommitted(self) -> list[str]:
        """Delete what saves that never finished left in the directory; returns the deleted names.

        Those are temporary ``.partial.*`` files, and checkpoint files that
        ``latest.json`` does not name and that either are newer than its
        checkpoint or are replay buffers (only the latest one is kept). Called
        when a run resumes, before it saves: otherwise pruning, which keeps the
        highest step numbers, could keep such a file and delete the checkpoint
        ``latest.json`` names.
        """
        latest = self.latest()
        if latest is None:
            return []
        named = {latest["model"], latest["training_state"], latest["replay_buffer"]}
        stale = []
        for name in sorted(os.listdir(self.directory)):
            match = CHECKPOINT_FILE.fullmatch(name)
            uncommitted = match is not None and name not in named
            if name.startswith(".partial.") or (
                uncommitted and (match[1] == "replay_buffer" or int(match[2]) > latest["env_steps"])
            ):
                os.remove(self.path(name))
                stale.append(name)
        return stale

    def prune(self) -> None:
        """Delete all but the newest ``keep`` model checkpoints (and their training states)."""
        if not self.keep:
            return
        names = [n for n in os.listdir(self.directory) if n.startswith("model_") and n.endswith(".zip")]
        steps = sorted(int(n[len("model_") : -len(".zip")]) for n in names)
        for old in steps[: -self.keep]:
            for name in (f"model_{old}.zip", f"training_state_{old}.pt"):
                if os.path.exists(self.path(name)):
                    os.remove(self.path(name))


@dataclass
class Resume:
    """What a resumed run continues from: its directory and the files of its latest checkpoint."""

    run_dir: str
    model_path: str
    replay_buffer_path: str | None
    counters: dict[str, int]
    wandb_run_id: str | None
    rng: dict[str, Any]

    def restore_rng(self, device: torch.device) -> None:
        set_rng_states(self.rng, device)


def save_run_config(run_dir: str, cfg: DictConfig) -> None:
    """Write the resolved config as ``<run_dir>/config.yaml`` (what a resume is checked against)."""
    write_atomic(os.path.join(run_dir, CONFIG), lambda tmp: OmegaConf.save(cfg, tmp, resolve=True))


def load_resume(run_dir: str, cfg: DictConfig) -> Resume:
    """Check that ``run_dir`` is a run directory with a checkpoint that ``cfg`` may continue; read nothing else.

    :raises ValueError: not a run directory, no checkpoint yet, or a setting
        of :data:`MUST_MATCH` differs (the key and both values are named)
    """
    latest_path = os.path.join(run_dir, "checkpoints", LATEST)
    config_path = os.path.join(run_dir, CONFIG)
    if not os.path.isdir(run_dir) or not os.path.isfile(config_path):
        raise ValueError(f"resume={run_dir!r} is not a DSRL run directory (it has no {CONFIG})")
    if not os.path.isfile(latest_path):
        raise ValueError(f"resume={run_dir!r} has no finished checkpoint yet (no checkpoints/{LATEST})")
    saved = OmegaConf.load(config_path)
    difference = first_difference(*(selected_settings(c, MUST_MATCH) for c in (saved, cfg)), skip=MAY_CHANGE)
    if difference:
        name, before, now = difference
        older = (
            f"; the run predates {name}: add it to {config_path} with the value that matches how that run trained"
            if before is NOT_SET
            else ""
        )
        raise ValueError(
            f"resume={run_dir!r}: its run has {name}={before!r}, this config has {now!r}; a checkpoint only "
            "continues the same task, base policy, number of train envs and training settings "
            f"(only {', '.join(MAY_CHANGE)} may change){older}"
        )
    with open(latest_path) as f:
        entry = json.load(f)
    directory = os.path.dirname(latest_path)
    state = torch.load(os.path.join(directory, entry["training_state"]), weights_only=False)
    buffer = entry["replay_buffer"]
    return Resume(
        run_dir=run_dir,
        model_path=os.path.join(directory, entry["model"]),
        replay_buffer_path=os.path.join(directory, buffer) if buffer else None,
        counters=state["counters"],
        wandb_run_id=state["wandb_run_id"],
        rng=state["rng"],
    )
