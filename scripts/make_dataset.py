"""Make a demonstration dataset in DPPO's format (train.npz + normalization.npz).

Gym (SB3 SAC expert, then a D4RL-"medium"-like dataset from a partially trained snapshot):

    python scripts/make_dataset.py gym --env Hopper-v5 --out data/gym/hopper

Robomimic lift, can and square (scripted experts, written as a Robomimic hdf5 and converted):

    python scripts/make_dataset.py robomimic --task lift --out data/robomimic/lift

Fetch (scripted experts on the flat observation; only successful episodes are kept):

    python scripts/make_dataset.py fetch --task FetchPickAndPlace-v4 --out data/fetch/pick_and_place

PushT (the scripted pushing expert acting with noise, its noise-free targets recorded; the T's keypoints + agent
position, the 5-number state, or 96x96 pixels + agent position; the same seeds give the same demos):

    python scripts/make_dataset.py pusht --obs-type environment_state_agent_pos --out data/pusht/state
    python scripts/make_dataset.py pusht --obs-type pixels_agent_pos --out data/pusht/pixels

The steering task of the tests (scripted two-goal demonstrations):

    python scripts/make_dataset.py steering --out data/steering

Datasets joined into one (e.g. the same expert run with other seeds; bounds are the union of theirs):

    python scripts/make_dataset.py join --out data/pusht/state data/pusht/state_seed0 data/pusht/state_seed1

The scripted collections (robomimic, fetch, pusht) keep each success in <out>/partial/ until the dataset is
written: one stopped (Ctrl-C, a kill) continues from its last finished episode when the same command is run
again, and gives the same dataset as one never stopped.

A Robomimic hdf5 of your own (e.g. can/mh/low_dim_v15.hdf5), converted the same way:

    python scripts/make_dataset.py convert --hdf5 low_dim_v15.hdf5 --task can --out data/robomimic/can_mh
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

import numpy as np

from dsrl.envs.pusht import OBS_TYPES as PUSHT_OBS_TYPES
from dsrl.files import write_text


def make_gym(args: argparse.Namespace) -> None:
    from dsrl.data.gym_expert import collect, pick_medium, train_expert

    snapshots = train_expert(
        args.env, args.expert_steps, args.snapshot_every, os.path.join(args.out, "expert"), args.seed
    )
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
    text = json.dumps(summary, indent=2)
    write_text(os.path.join(args.out, "summary.json"), text)
    print(text)


def work_dir(args: argparse.Namespace) -> str:
    """Where a scripted collection keeps its episodes until the dataset is written (see dsrl.data.collection)."""
    return os.path.join(args.out, "partial")


def collection_settings(args: argparse.Namespace) -> dict:
    """The arguments that make a scripted collection's episodes (a stopped one continues only with the same)."""
    return {k: v for k, v in sorted(vars(args).items()) if k not in ("func", "out", "demos", "seed")}


def make_robomimic(args: argparse.Namespace) -> None:
    from dsrl.data.collection import collect_until_successes
    from dsrl.data.robomimic_experts import EXPERTS, run_expert_episode
    from dsrl.data.robomimic_hdf5 import write_demos
    from dsrl.envs.robomimic import MAX_EPISODE_STEPS, env_meta_path, load_env_meta, make_robomimic_env

    env = make_robomimic_env(args.task, MAX_EPISODE_STEPS[args.task])
    rng = np.random.default_rng(args.seed)
    expert = EXPERTS[args.task](env, rng, noise=args.noise)
    demos, attempts = collect_until_successes(
        lambda seed: run_expert_episode(expert, seed, MAX_EPISODE_STEPS[args.task]),
        args.demos,
        args.seed,
        rng,
        work_dir(args),
        collection_settings(args),
    )
    hdf5_path = os.path.join(args.out, "demos.hdf5")
    write_demos(hdf5_path, load_env_meta(env_meta_path(args.task)), demos)
    print(f"scripted {args.task} expert: {len(demos)} successes in {attempts} attempts ({len(demos) / attempts:.3f})")
    args.hdf5 = hdf5_path
    convert(args)
    shutil.rmtree(work_dir(args))


def save_scripted(args: argparse.Namespace, data, attempts: int) -> None:
    """Write scripted demonstrations as DPPO npz (bounds fitted, pixels' set to [0, 255]), drop the collection's
    work folder and print the expert's success rate."""
    data.validate(args.out)
    data.save_dppo(args.out)
    shutil.rmtree(work_dir(args))
    steps = int(data.traj_lengths.sum())
    print(
        f"wrote {args.out}/train.npz: {data.n_trajectories} demos ({steps} steps) from {attempts} attempts, "
        f"expert success rate {data.n_trajectories / attempts:.3f}"
    )


def make_fetch(args: argparse.Namespace) -> None:
    from dsrl.data.fetch_experts import FETCH_EXPERTS
    from dsrl.data.trajectories import collect_successes
    from dsrl.envs.fetch import make_fetch_env

    env = make_fetch_env(args.task, args.max_episode_steps)
    rng = np.random.default_rng(args.seed)
    expert = FETCH_EXPERTS[args.task](rng, noise=args.noise)
    save_scripted(
        args,
        *collect_successes(
            env,
            expert,
            args.demos,
            args.seed,
            args.max_episode_steps,
            expert.reset,
            rng,
            work_dir=work_dir(args),
            settings=collection_settings(args),
        ),
    )


def make_pusht(args: argparse.Namespace) -> None:
    from dsrl.data.pusht_expert import PushTExpert
    from dsrl.data.trajectories import collect_successes
    from dsrl.envs.pusht import IMAGE_SHAPE, PUSHT_ID, make_pusht_env, pusht_state

    env = make_pusht_env(PUSHT_ID, args.max_episode_steps, args.obs_type, args.success_threshold)
    rng = np.random.default_rng(args.seed)
    expert = PushTExpert(rng, noise=args.noise, vary_style=args.vary_style)
    data, attempts = collect_successes(
        env,
        lambda obs: expert(pusht_state(env)),
        args.demos,
        args.seed,
        args.max_episode_steps,
        expert.reset,
        rng,
        label=lambda: expert.clean_target,
        work_dir=work_dir(args),
        settings=collection_settings(args),
        image_shape=IMAGE_SHAPE if args.obs_type == "pixels_agent_pos" else None,
    )
    save_scripted(args, data, attempts)


def make_steering(args: argparse.Namespace) -> None:
    from dsrl.envs.steering import collect_demonstrations

    data, success = collect_demonstrations(args.episodes, args.seed)
    data.save_dppo(args.out)
    steps = int(data.traj_lengths.sum())
    print(f"wrote {args.out}/train.npz: {args.episodes} demos, {steps} steps, success {success:.3f}")


def convert(args: argparse.Namespace) -> None:
    from dsrl.data.robomimic_hdf5 import read_low_dim
    from dsrl.envs.robomimic import LOW_DIM_KEYS

    data = read_low_dim(args.hdf5, LOW_DIM_KEYS[args.task])
    data.save_dppo(args.out)
    print(
        f"wrote {args.out}/train.npz: {data.n_trajectories} demos, {int(data.traj_lengths.sum())} steps, "
        f"obs_dim {data.states.shape[1]}, action_dim {data.actions.shape[1]}"
    )


def join(args: argparse.Namespace) -> None:
    from dsrl.data.trajectories import join_dppo

    data, normalizer = join_dppo(args.datasets)
    data.save_dppo(args.out, normalizer)
    print(f"wrote {args.out}/train.npz: {data.n_trajectories} demos ({int(data.traj_lengths.sum())} steps)")


def scripted_parser(sub, name: str, func, noise: float, noise_help: str) -> argparse.ArgumentParser:
    """A subcommand for a scripted expert, with the arguments they all take (--out, --demos, --noise, --seed)."""
    parser = sub.add_parser(name, help=f"scripted {name} expert -> demonstrations")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--demos", type=int, default=100, help="successful demonstrations to keep")
    parser.add_argument("--noise", type=float, default=noise, help=noise_help)
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=func)
    return parser


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
    robo_parser = scripted_parser(sub, "robomimic", make_robomimic, 0.1, "std of the Gaussian action noise")
    robo_parser.add_argument("--task", required=True, choices=["lift", "can", "square"])
    fetch_parser = scripted_parser(sub, "fetch", make_fetch, 0.1, "std of the Gaussian action noise")
    fetch_parser.add_argument("--task", required=True, choices=["FetchPickAndPlace-v4", "FetchPush-v4"])
    fetch_parser.add_argument("--max-episode-steps", type=int, default=50)
    pusht_parser = scripted_parser(sub, "pusht", make_pusht, 4.0, "std of the target noise, pixels")
    pusht_parser.add_argument("--obs-type", default="environment_state_agent_pos", choices=PUSHT_OBS_TYPES)
    pusht_parser.add_argument("--success-threshold", type=float, default=0.95, help="goal coverage of a success")
    pusht_parser.add_argument(
        "--vary-style", action=argparse.BooleanOptionalAction, default=True, help="a new expert style per episode"
    )
    pusht_parser.add_argument("--max-episode-steps", type=int, default=300)
    steering_parser = sub.add_parser("steering", help="two-goal steering demonstrations")
    steering_parser.add_argument("--out", required=True, help="output directory")
    steering_parser.add_argument("--episodes", type=int, default=300)
    steering_parser.add_argument("--seed", type=int, default=0)
    steering_parser.set_defaults(func=make_steering)
    convert_parser = sub.add_parser("convert", help="Robomimic hdf5 -> DPPO npz")
    convert_parser.add_argument("--hdf5", required=True, help="Robomimic low-dim hdf5 file")
    convert_parser.add_argument("--task", required=True, choices=["lift", "can", "square", "transport"])
    convert_parser.add_argument("--out", required=True, help="output directory")
    convert_parser.set_defaults(func=convert)
    join_parser = sub.add_parser("join", help="DPPO datasets -> one dataset")
    join_parser.add_argument("--out", required=True, help="output directory")
    join_parser.add_argument("datasets", nargs="+", help="dataset directories, joined in this order")
    join_parser.set_defaults(func=join)
    args = parser.parse_args()
    try:
        args.func(args)
    except KeyboardInterrupt:
        print("stopped by Ctrl-C (a scripted collection continues when the same command is run again)", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
