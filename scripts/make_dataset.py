"""Make a demonstration dataset in DPPO's format (train.npz + normalization.npz).

Gym (SB3 SAC expert, then a D4RL-"medium"-like dataset from a partially trained snapshot):

    python scripts/make_dataset.py gym --env Hopper-v5 --out data/gym/hopper

Robomimic (scripted experts, written as a Robomimic hdf5 and converted):

    python scripts/make_dataset.py robomimic --task lift --out data/robomimic/lift
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np


def make_gym(args: argparse.Namespace) -> None:
    from dsrl.data.gym_expert import collect, pick_medium, train_expert

    snapshots = train_expert(args.env, args.expert_steps, args.snapshot_every, os.path.join(args.out, "expert"), args.seed)
    medium = pick_medium(snapshots, args.medium_fraction)
    data, returns = collect(medium.path, args.env, args.steps, args.seed + 2)
    data.validate(args.env)
    data.save_dppo(args.out)
    summary = {
        "env": args.env,
        "seed": args.seed,
        "expert_steps": args.expert_steps,
        "snapshots": {s.steps: round(s.mean_return, 1) for s in snapshots},
        "best_return": round(max(s.mean_return for s in snapshots), 1),
        "medium_snapshot": medium.steps,
        "dataset_steps": int(data.traj_lengths.sum()),
        "dataset_episodes": len(returns),
        "dataset_return_mean": round(float(np.mean(returns)), 1),
    }
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(json.dumps(summary, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="suite", required=True)
    gym_parser = sub.add_parser("gym", help="SAC expert -> medium dataset")
    gym_parser.add_argument("--env", required=True, help="gymnasium id, e.g. Hopper-v5")
    gym_parser.add_argument("--out", required=True, help="output directory")
    gym_parser.add_argument("--seed", type=int, default=0)
    gym_parser.add_argument("--expert-steps", type=int, default=200_000, help="SAC training steps")
    gym_parser.add_argument("--snapshot-every", type=int, default=10_000, help="steps between scored snapshots")
    gym_parser.add_argument("--medium-fraction", type=float, default=1 / 3, help="target return / best return")
    gym_parser.add_argument("--steps", type=int, default=200_000, help="dataset size in steps")
    gym_parser.set_defaults(func=make_gym)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
