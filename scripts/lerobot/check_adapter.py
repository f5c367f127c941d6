"""Check the LeRobot adapter against LeRobot's own sampler, then steer it with both DSRL variants on PushT pixels.

Runs in the LeRobot environment (``scripts/lerobot/make_env.sh`` builds it and runs this):

1. builds a small LeRobot ``DiffusionPolicy`` for PushT (96x96 image + agent
   position, DDIM with 10 steps, horizon 16, 8 executed actions, 2
   observation steps), with made-up dataset statistics, and saves it and its
   processors with ``save_pretrained`` into ``--out``;
2. loads it through :func:`dsrl.base_policies.lerobot_adapter.load_lerobot_policy`
   and, on real PushT observations, compares the adapter's actions with
   LeRobot's ``select_action`` given the same noise (printing the largest
   difference; it must be below 1e-4 in pixels), and checks that other noise
   gives other actions;
3. runs a short DSRL-NA and DSRL-SAC training (``dsrl.training.run`` with
   ``base_policy.type=lerobot``) on PushT pixels with the agent observing the
   policy's embedding, and prints their final evaluations.

    python scripts/lerobot/check_adapter.py [--out DIR] [--steps 400]
"""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np
import torch

from dsrl.base_policies.lerobot_adapter import load_lerobot_policy
from dsrl.config import compose_task_config, repo_path
from dsrl.envs.pusht import PIXELS, PUSHT_ID, make_pusht_env
from dsrl.training import run


def make_tiny_policy(out: str, seed: int) -> None:
    """A randomly initialised LeRobot DiffusionPolicy for PushT pixels, saved with its processors."""
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig
    from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy
    from lerobot.policies.factory import make_pre_post_processors

    torch.manual_seed(seed)
    config = DiffusionConfig(
        input_features={
            "observation.image": PolicyFeature(FeatureType.VISUAL, (3, 96, 96)),
            "observation.state": PolicyFeature(FeatureType.STATE, (2,)),
        },
        output_features={"action": PolicyFeature(FeatureType.ACTION, (2,))},
        crop_shape=(84, 84),
        down_dims=(32, 64),
        diffusion_step_embed_dim=32,
        spatial_softmax_num_keypoints=16,
        noise_scheduler_type="DDIM",
        num_inference_steps=10,
        device="cpu",
    )
    stats = {
        "observation.image": {"mean": torch.full((3, 1, 1), 0.5), "std": torch.full((3, 1, 1), 0.25)},
        "observation.state": {"min": torch.tensor([13.0, 32.0]), "max": torch.tensor([496.0, 510.0])},
        "action": {"min": torch.tensor([12.0, 25.0]), "max": torch.tensor([511.0, 511.0])},
    }
    policy = DiffusionPolicy(config)
    preprocessor, postprocessor = make_pre_post_processors(config, dataset_stats=stats)
    policy.save_pretrained(out)
    preprocessor.save_pretrained(out)
    postprocessor.save_pretrained(out)


def lerobot_actions(policy, preprocessor, postprocessor, obs: np.ndarray, noise: torch.Tensor) -> np.ndarray:
    """LeRobot's own rollout path: preprocess, select_action with the noise injected, postprocess."""
    batch = {
        "observation.image": torch.as_tensor(obs[:, :PIXELS]).reshape(-1, 3, 96, 96) / 255.0,
        "observation.state": torch.as_tensor(obs[:, PIXELS:]),
    }
    batch = preprocessor(batch)
    policy.reset()
    actions = [policy.select_action(dict(batch), noise=noise) for _ in range(policy.config.n_action_steps)]
    return postprocessor(torch.stack(actions, dim=1)).numpy()


def check_same_actions(out: str, seed: int) -> None:
    from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy
    from lerobot.policies.factory import make_pre_post_processors

    adapter, normalizer = load_lerobot_policy(out)
    normalizer.save(os.path.join(out, "normalization.npz"))
    policy = DiffusionPolicy.from_pretrained(out).eval()
    preprocessor, postprocessor = make_pre_post_processors(policy.config, pretrained_path=out)
    env = make_pusht_env(PUSHT_ID, 300, obs_type="pixels_agent_pos")
    obs = np.stack([env.reset(seed=seed + i)[0] for i in range(4)])
    noise = torch.randn(4, adapter.noise_steps, adapter.action_dim, generator=torch.Generator().manual_seed(seed))
    normalized = normalizer.normalize_obs(obs)
    stacked = torch.as_tensor(np.concatenate([normalized, normalized], axis=1))  # 2 observation steps
    ours = normalizer.unnormalize_action(adapter(stacked, noise).numpy())
    theirs = lerobot_actions(policy, preprocessor, postprocessor, obs, noise)
    difference = float(np.abs(ours - theirs).max())
    moved = float(np.abs(normalizer.unnormalize_action(adapter(stacked, -noise).numpy()) - ours).mean())
    print(
        f"adapter vs LeRobot select_action with the same noise: actions {ours.shape}, "
        f"max |difference| {difference:.2e} px; with other noise the actions move by {moved:.1f} px"
    )
    if difference > 1e-4 or moved < 1.0:
        raise SystemExit("the adapter does not reproduce LeRobot's sampler")


def steer(out: str, steps: int, algorithm: str, run_dir: str) -> dict[str, float]:
    cfg = compose_task_config(
        repo_path("cfg/pusht/dsrl_pusht_pixels.yaml"),
        [
            f"run_dir={run_dir}",
            f"algorithm={algorithm}",
            "base_policy.type=lerobot",
            f"base_policy.checkpoint={out}",
            f"base_policy.normalization={os.path.join(out, 'normalization.npz')}",
            "base_policy.cond_steps=2",
            "wandb.mode=disabled",
            "env.vec_env=dummy",
            "env.n_envs=2",
            "env.n_eval_envs=2",
            f"train.total_env_steps={steps}",
            "train.init_rollout_steps=4",
            "train.layer_size=64",
            "train.utd=1",
            "train.batch_size=32",
            "train.noise_critic_grad_steps=1",
            "eval.interval_env_steps=0",
            "eval.n_episodes=2",
            "video.every_evals=0",
        ],
    )
    return run(cfg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="where the tiny policy is saved (default: a new temp dir)")
    parser.add_argument("--steps", type=int, default=400, help="simulator steps of each short DSRL run")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out = args.out or tempfile.mkdtemp(prefix="lerobot_pusht_")
    make_tiny_policy(args.out, args.seed)
    print(f"saved a LeRobot DiffusionPolicy with save_pretrained in {args.out}: {sorted(os.listdir(args.out))}")
    check_same_actions(args.out, args.seed)
    for algorithm in ("dsrl_na", "dsrl_sac"):
        result = steer(args.out, args.steps, algorithm, os.path.join(args.out, "runs", algorithm))
        print(f"{algorithm} on PushT pixels through the adapter, {args.steps} sim steps: {result}")


if __name__ == "__main__":
    main()
