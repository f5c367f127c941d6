"""Behaviour-clone a base policy from a DPPO-format dataset and write DPPO-format checkpoints.

    python scripts/pretrain.py --config-path=cfg/pretrain --config-name=robomimic_can.yaml dataset=data/robomimic/can

Overrides take Hydra's syntax (``train.steps=5000 policy_type=flow``).

Writes ``state_<step>.pt`` (model and ema weights, and the training state a
continuation needs) every ``train.save_every`` steps, ``state.pt`` (the last
one's ema weights: what DSRL loads, and what is shipped), ``normalization.npz``
and ``card.yaml`` (data, training and the measured success rate / return of
every checkpoint) into ``output_dir``.

Ctrl-C or SIGTERM stops it after the current step with a ``state_<step>.pt``
(exit status 130 / 143); ``resume=true`` continues the run in ``output_dir``
from its latest one, taking the same steps as a run that was never stopped.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import sys

import torch
import yaml
from omegaconf import DictConfig, OmegaConf
from stable_baselines3.common.utils import get_device
from tqdm import tqdm

from dsrl.base_policies import Normalizer, build_base_policy
from dsrl.base_policies.base import NoisePolicy
from dsrl.base_policies.checkpoint import CARD, save_checkpoint
from dsrl.config import compose_task_config, user_path
from dsrl.data.observation_histories import ObservationHistories
from dsrl.data.trajectories import chunk_pairs, load_dppo
from dsrl.envs.factory import check_observations, make_vec_env
from dsrl.evaluation import BasePolicyAgent, evaluate
from dsrl.files import write_atomic, write_text
from dsrl.interrupts import RunInterrupted, StopRequest
from dsrl.pretrain import BehaviourCloning
from dsrl.settings import first_difference


def check_dataset(dataset_dir: str, base_cfg: dict) -> tuple[str, Normalizer]:
    """Paths of train.npz and its normalisation, checked against the policy's dimensions."""
    train_path = os.path.join(dataset_dir, "train.npz")
    normalization_path = os.path.join(dataset_dir, "normalization.npz")
    normalizer = Normalizer.load(normalization_path)
    source = f"dataset normalization {normalization_path!r}"
    normalizer.require_dims(base_cfg["obs_dim"], base_cfg["action_dim"], source)
    return train_path, normalizer


def earlier_policy_files(out_dir: str) -> list[str]:
    """What a pretraining run wrote into ``out_dir``: ``state.pt``, ``state_<step>.pt`` and ``card.yaml``."""
    return sorted(glob.glob(os.path.join(out_dir, "state*.pt")) + glob.glob(os.path.join(out_dir, CARD)))


def latest_checkpoint(out_dir: str) -> str | None:
    """The ``state_<step>.pt`` in ``out_dir`` with the highest step, or None."""
    paths = glob.glob(os.path.join(out_dir, "state_*.pt"))
    return max(paths, key=lambda p: int(os.path.basename(p)[len("state_") : -len(".pt")]), default=None)


def check_same_run(saved: dict, settings: dict, path: str) -> None:
    """Raise a ValueError naming the first setting in which this config differs from the run that wrote ``path``."""
    difference = first_difference(saved, settings)
    if difference:
        key, old, new = difference
        raise ValueError(f"resume=true: {key} is {new!r} here but {old!r} in the run that wrote {path!r}")


def pretrain(cfg: DictConfig) -> None:
    """Run (or, with ``resume=true``, continue) the behaviour cloning a pretrain config describes."""
    task = compose_task_config(cfg.task_config, ["run_dir=unused"])
    base_cfg = OmegaConf.to_container(task.base_policy, resolve=True)
    for key in ("checkpoint", "normalization"):
        base_cfg.pop(key)
    base_cfg["type"] = cfg.policy_type
    out_dir = user_path(cfg.output_dir)
    latest = latest_checkpoint(out_dir)
    if cfg.resume and cfg.overwrite:
        raise ValueError("resume=true and overwrite=true: continue the run in output_dir or replace it, not both")
    if cfg.resume and latest is None:
        raise FileNotFoundError(f"resume=true but output_dir {out_dir!r} holds no state_<step>.pt to continue from")
    earlier = earlier_policy_files(out_dir)
    if earlier and not (cfg.resume or cfg.overwrite):
        names = ", ".join(os.path.basename(path) for path in earlier)
        raise FileExistsError(
            f"output_dir {out_dir!r} already holds a policy ({names}); set overwrite=true to replace it, "
            "resume=true to continue its run, or output_dir=... to write elsewhere"
        )
    env_cfg = OmegaConf.to_container(task.env, resolve=True)
    if cfg.eval.n_episodes:
        check_observations(env_cfg, base_cfg)
    dataset_dir = user_path(cfg.dataset)
    train_path, normalizer = check_dataset(dataset_dir, base_cfg)
    dataset = load_dppo(train_path)
    rows, chunks = chunk_pairs(dataset, base_cfg["horizon_steps"], base_cfg["cond_steps"])
    train_cfg = OmegaConf.to_container(cfg.train)
    settings = {
        "policy": base_cfg,
        "dataset": dataset_dir,
        "train": {k: v for k, v in train_cfg.items() if k != "save_every"},
        "seed": cfg.seed,
    }

    device = get_device(cfg.device)
    torch.manual_seed(cfg.seed)
    cloning = BehaviourCloning(
        build_base_policy(base_cfg),
        ObservationHistories(dataset, rows, normalizer, device),
        chunks,
        steps=cfg.train.steps,
        batch_size=cfg.train.batch_size,
        lr=cfg.train.learning_rate,
        weight_decay=cfg.train.weight_decay,
        warmup_steps=cfg.train.warmup_steps,
        ema_decay=cfg.train.ema_decay,
        seed=cfg.seed,
        device=device,
    )
    snapshots: list[dict] = []
    if cfg.resume:
        saved = torch.load(latest, map_location="cpu", weights_only=True)
        if "settings" not in saved:
            raise ValueError(f"resume=true: {latest!r} holds weights only, not a training state to continue from")
        check_same_run(saved["settings"], settings, latest)
        cloning.load_state_dict(saved)
        snapshots = saved["snapshots"]
    else:
        os.makedirs(out_dir, exist_ok=True)
        for path in earlier:  # overwrite=true: no earlier run's checkpoint or card stays
            os.remove(path)
        shutil.copyfile(os.path.join(dataset_dir, "normalization.npz"), os.path.join(out_dir, "normalization.npz"))

    def save() -> str:
        path = os.path.join(out_dir, f"state_{cloning.step}.pt")
        state = dict(cloning.state_dict(), epoch=cloning.step, settings=settings, snapshots=snapshots)
        write_atomic(path, lambda tmp: torch.save(state, tmp))
        return path

    bar = tqdm(total=cfg.train.steps, initial=cloning.step, desc="behaviour cloning")
    with StopRequest() as stop:
        while cloning.step < cfg.train.steps:
            loss = cloning.train_step()
            bar.update()
            bar.set_postfix(loss=f"{loss:.4f}")
            path = None
            if cloning.step % cfg.train.save_every == 0 or cloning.step == cfg.train.steps:
                record = {"step": cloning.step, "checkpoint": f"state_{cloning.step}.pt", "loss": round(loss, 5)}
                if cfg.eval.n_episodes:
                    record.update(evaluate_policy(cloning.ema, env_cfg, normalizer, cfg))
                snapshots.append(record)
                path = save()
                tqdm.write(str(record))
            if stop.signal is not None:
                bar.close()
                raise RunInterrupted(
                    stop.signal,
                    f"stopped by {stop.signal.name} at step {cloning.step}, training state saved in {path or save()} "
                    "(continue with resume=true)",
                )
    bar.close()
    save_checkpoint(os.path.join(out_dir, "state.pt"), None, cloning.ema, cloning.step)
    card = {
        "policy": base_cfg,
        "dataset": {"path": cfg.dataset, "steps": len(chunks)},
        "training": train_cfg,
        "evaluation": f"{cfg.eval.n_episodes} episodes per checkpoint, noise ~ N(0, I) clipped at 3, "
        f"env seed {cfg.eval.seed}",
        "checkpoints": snapshots,
        "state.pt": f"the ema weights of state_{cfg.train.steps}.pt",
    }
    write_text(os.path.join(out_dir, CARD), yaml.safe_dump(card, sort_keys=False))
    print(f"wrote {out_dir}")


def evaluate_policy(policy: NoisePolicy, env_cfg: dict, normalizer: Normalizer, cfg: DictConfig) -> dict[str, float]:
    """Success rate and return of ``policy`` with noise ~ N(0, I) over ``cfg.eval.n_episodes`` episodes."""
    venv = make_vec_env(dict(env_cfg, vec_env="subproc"), normalizer, policy.chunk, policy.cond_steps, cfg.eval.n_envs)
    result = evaluate(BasePolicyAgent(policy, seed=cfg.seed), venv, cfg.eval.n_episodes, False, cfg.eval.seed)
    venv.close()
    return {k: round(v, 4) for k, v in result.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-path", required=True, help="directory of the pretrain config")
    parser.add_argument("--config-name", required=True, help="pretrain config file name")
    parser.add_argument("overrides", nargs="*", help="Hydra-style overrides, e.g. dataset=DIR train.steps=5000")
    args = parser.parse_args()
    try:
        pretrain(compose_task_config(os.path.join(args.config_path, args.config_name), args.overrides))
    except RunInterrupted as stop:
        print(stop, file=sys.stderr)
        sys.exit(stop.exit_status)


if __name__ == "__main__":
    main()
