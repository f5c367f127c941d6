"""Behaviour-clone a base policy from a DPPO-format dataset and write DPPO-format checkpoints.

    python scripts/pretrain.py --config-path=cfg/pretrain --config-name=robomimic_can.yaml dataset=data/robomimic/can

Overrides take Hydra's syntax (``train.steps=5000 policy_type=flow``).

Writes ``state_<step>.pt`` (model and ema weights) every ``train.save_every``
steps, ``state.pt`` (the last one's ema weights: what DSRL loads, and what is
shipped), ``normalization.npz`` and ``card.yaml`` (data, training and the
measured success rate / return of every checkpoint) into ``output_dir``.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil

import torch
import yaml
from omegaconf import DictConfig, OmegaConf
from stable_baselines3.common.utils import get_device
from tqdm import tqdm

from dsrl.base_policies import Normalizer, build_base_policy
from dsrl.base_policies.checkpoint import save_checkpoint
from dsrl.config import compose_task_config, user_path
from dsrl.data.trajectories import chunk_pairs, load_dppo
from dsrl.envs.factory import check_observations, make_vec_env
from dsrl.evaluation import BasePolicyAgent, evaluate
from dsrl.pretrain import behaviour_clone


def check_dataset(dataset_dir: str, base_cfg: dict) -> tuple[str, Normalizer]:
    """Paths of train.npz and its normalisation, checked against the policy's dimensions."""
    train_path = os.path.join(dataset_dir, "train.npz")
    normalization_path = os.path.join(dataset_dir, "normalization.npz")
    normalizer = Normalizer.load(normalization_path)
    source = f"dataset normalization {normalization_path!r}"
    normalizer.require_dims(base_cfg["obs_dim"], base_cfg["action_dim"], source)
    return train_path, normalizer


def pretrain(cfg: DictConfig) -> None:
    """Run the behaviour cloning a pretrain config describes."""
    task = compose_task_config(cfg.task_config, ["run_dir=unused"])
    base_cfg = OmegaConf.to_container(task.base_policy, resolve=True)
    for key in ("checkpoint", "normalization"):
        base_cfg.pop(key)
    base_cfg["type"] = cfg.policy_type
    out_dir = user_path(cfg.output_dir)
    previous = glob.glob(os.path.join(out_dir, "state*.pt"))
    if previous and not cfg.overwrite:
        raise FileExistsError(f"output_dir {out_dir!r} already holds checkpoints; set overwrite=true to replace them")
    env_cfg = OmegaConf.to_container(task.env, resolve=True)
    if cfg.eval.n_episodes:
        check_observations(env_cfg, base_cfg)
    dataset_dir = user_path(cfg.dataset)
    train_path, normalizer = check_dataset(dataset_dir, base_cfg)
    obs, chunks = chunk_pairs(load_dppo(train_path), base_cfg["horizon_steps"], base_cfg["cond_steps"])

    device = get_device(cfg.device)
    torch.manual_seed(cfg.seed)
    policy = build_base_policy(base_cfg)
    os.makedirs(out_dir, exist_ok=True)
    for path in previous:  # overwrite=true: no checkpoint of an earlier run stays beside the new ones
        os.remove(path)
    shutil.copyfile(os.path.join(dataset_dir, "normalization.npz"), os.path.join(out_dir, "normalization.npz"))
    snapshots = []
    bar = tqdm(total=cfg.train.steps, desc="behaviour cloning")

    def on_step(step: int, loss: float, ema) -> None:
        bar.update()
        bar.set_postfix(loss=f"{loss:.4f}")
        if step % cfg.train.save_every and step != cfg.train.steps:
            return
        path = os.path.join(out_dir, f"state_{step}.pt")
        save_checkpoint(path, policy, ema, epoch=step)
        record = {"step": step, "checkpoint": os.path.basename(path), "loss": round(loss, 5)}
        if cfg.eval.n_episodes:
            venv = make_vec_env(
                dict(env_cfg, vec_env="subproc"), normalizer, ema.chunk, ema.cond_steps, cfg.eval.n_envs
            )
            result = evaluate(BasePolicyAgent(ema, seed=cfg.seed), venv, cfg.eval.n_episodes, False, cfg.eval.seed)
            venv.close()
            record.update({k: round(v, 4) for k, v in result.items()})
        snapshots.append(record)
        tqdm.write(str(record))

    behaviour_clone(
        policy,
        obs,
        chunks,
        steps=cfg.train.steps,
        batch_size=cfg.train.batch_size,
        lr=cfg.train.learning_rate,
        weight_decay=cfg.train.weight_decay,
        warmup_steps=cfg.train.warmup_steps,
        ema_decay=cfg.train.ema_decay,
        seed=cfg.seed,
        device=device,
        on_step=on_step,
    )
    bar.close()
    final = torch.load(os.path.join(out_dir, f"state_{cfg.train.steps}.pt"), weights_only=True)
    torch.save({"epoch": final["epoch"], "ema": final["ema"]}, os.path.join(out_dir, "state.pt"))
    card = {
        "policy": base_cfg,
        "dataset": {"path": cfg.dataset, "steps": len(obs)},
        "training": OmegaConf.to_container(cfg.train),
        "evaluation": f"{cfg.eval.n_episodes} episodes per checkpoint, noise ~ N(0, I) clipped at 3, "
        f"env seed {cfg.eval.seed}",
        "checkpoints": snapshots,
        "state.pt": f"the ema weights of state_{cfg.train.steps}.pt",
    }
    with open(os.path.join(out_dir, "card.yaml"), "w") as f:
        yaml.safe_dump(card, f, sort_keys=False)
    print(f"wrote {out_dir}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-path", required=True, help="directory of the pretrain config")
    parser.add_argument("--config-name", required=True, help="pretrain config file name")
    parser.add_argument("overrides", nargs="*", help="Hydra-style overrides, e.g. dataset=DIR train.steps=5000")
    args = parser.parse_args()
    pretrain(compose_task_config(os.path.join(args.config_path, args.config_name), args.overrides))


if __name__ == "__main__":
    main()
