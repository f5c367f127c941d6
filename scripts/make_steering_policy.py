"""Regenerate the steering task's shipped base policy (checkpoints/steering/<type>/).

    python scripts/make_steering_policy.py [--type diffusion|flow] [--seed 0]

Collects scripted two-goal demonstrations, behaviour-clones the policy
configured in cfg/steering/dsrl_steering.yaml, measures its success rate with
noise ~ N(0, I) and writes state.pt, normalization.npz and card.yaml.
"""

import argparse
import os

import torch
import yaml
from omegaconf import OmegaConf

from dsrl.base_policies import Normalizer, build_base_policy
from dsrl.base_policies.checkpoint import save_checkpoint
from dsrl.config import compose_task_config, repo_path
from dsrl.envs.factory import make_vec_env
from dsrl.envs.steering import collect_demonstrations
from dsrl.evaluation import BasePolicyAgent, evaluate
from dsrl.pretrain import behaviour_clone

FLOW_SAMPLER = {"type": "flow", "flow_steps": 10}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--type", choices=["diffusion", "flow"], default="diffusion")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--episodes", type=int, default=300, help="demonstration episodes")
    parser.add_argument("--steps", type=int, default=3000, help="behaviour-cloning gradient steps")
    parser.add_argument("--eval-episodes", type=int, default=500)
    args = parser.parse_args()

    cfg = compose_task_config(repo_path("cfg/steering/dsrl_steering.yaml"))
    base_cfg = OmegaConf.to_container(cfg.base_policy, resolve=True)
    for key in ("checkpoint", "normalization"):
        base_cfg.pop(key)
    if args.type == "flow":
        for key in ("denoising_steps", "ddim_steps", "denoised_clip_value"):
            base_cfg.pop(key)
        base_cfg.update(FLOW_SAMPLER)
    env_cfg = OmegaConf.to_container(cfg.env)

    obs, chunks, demo_success = collect_demonstrations(args.episodes, base_cfg["horizon_steps"], args.seed)
    normalizer = Normalizer.fit(obs, chunks.reshape(-1, chunks.shape[-1]))
    policy = build_base_policy(base_cfg)
    torch.manual_seed(args.seed)
    ema = behaviour_clone(
        policy, normalizer.normalize_obs(obs), normalizer.normalize_action(chunks), steps=args.steps, seed=args.seed
    )
    eval_env = make_vec_env(env_cfg, normalizer, ema.chunk, ema.cond_steps, env_cfg["n_eval_envs"])
    agent = BasePolicyAgent(ema, seed=args.seed)
    success = evaluate(agent, eval_env, args.eval_episodes, deterministic=False, seed=args.seed + 1)["success_rate"]

    out_dir = repo_path(f"checkpoints/steering/{args.type}")
    os.makedirs(out_dir, exist_ok=True)
    save_checkpoint(os.path.join(out_dir, "state.pt"), policy, ema, epoch=args.steps)
    normalizer.save(os.path.join(out_dir, "normalization.npz"))
    card = {
        "task": "steering (dsrl/envs/steering.py)",
        "policy": base_cfg,
        "data": f"{args.episodes} scripted demonstrations, seed {args.seed}, {len(obs)} steps, "
        f"success {demo_success:.3f} (either goal with probability 1/2)",
        "training": f"behaviour cloning, {args.steps} steps, batch 256, EMA 0.995",
        "base_success_rate": round(success, 4),
        "evaluation": f"{args.eval_episodes} episodes, noise ~ N(0, I) clipped at 3, env seed {args.seed + 1}",
        "command": f"python scripts/make_steering_policy.py --type {args.type} --seed {args.seed}",
    }
    with open(os.path.join(out_dir, "card.yaml"), "w") as f:
        yaml.safe_dump(card, f, sort_keys=False)
    print(f"wrote {out_dir}: base success rate {success:.3f} over {args.eval_episodes} episodes")


if __name__ == "__main__":
    main()
