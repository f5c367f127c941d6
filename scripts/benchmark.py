"""Speed of DSRL's updates against the compute floor and SB3's SAC, measured side by side in one process.

    python scripts/benchmark.py                       # hopper, can, can at width 256 on the default device
    python scripts/benchmark.py --configs can_256 --device cpu --repeats 5 --json out.json
    python scripts/benchmark.py --e2e hopper --e2e-steps 3000   # also a short learn() on real simulators
    python scripts/benchmark.py --configs can train.fused_optimizer=false   # config overrides for every config
    python scripts/benchmark.py --configs can --compiled   # also the update compiled (train.torch_compile=true)
    python scripts/benchmark.py --configs can --bf16       # also in bfloat16 autocast (train.autocast_bf16=true)
    python scripts/benchmark.py --configs "" --sim can,transport --sim-procs 4   # Robomimic simulators alone

For each config (the task config's base policy with random weights, its
widths, utd and DDIM steps; replay buffers filled with random transitions):

- ``dsrl_na_update_s``: one ``SACDiffusionNoise.train(gradient_steps=utd)``
  call (utd critic/actor steps, then ``noise_critic_grad_steps`` distillation steps);
- ``floor_update_s``: the same mathematical work as the shortest plain-PyTorch
  loop, eager (same networks, same denoising passes, batches indexed from
  device tensors, no SB3, no logging), the reference the implementation is
  held to;
- ``sb3_sac_update_s``: SB3's own ``SAC.train(gradient_steps=utd)`` with
  MlpPolicy at the same widths and dimensions, for orientation.
- with ``--compiled``, ``dsrl_na_compiled_update_s``: the same update of a
  second agent with ``train.torch_compile=true`` (its first call, which
  compiles, is the warm-up), and ``dsrl_na_compiled_over_floor``;
- with ``--bf16``, ``dsrl_na_bf16_update_s`` with ``train.autocast_bf16=true``
  (and with both flags ``dsrl_na_compiled_bf16_update_s``), each with its
  ratio to the (float32) floor.

Besides: the DSRL-SAC wrapper's overhead per environment step (denoising 4
envs' noise, over an env that costs nothing), base-policy sampling rates
at batch 1 and 256, and optionally ``end_to_end_sim_steps_per_s`` of a short
``learn()`` (simulator steps, chunk included, 4 subprocess train envs, the
config's utd) after its warm-up rollouts. Times are medians after warm-up.

``--sim`` times Robomimic tasks' simulators alone, ``--sim-procs`` processes
side by side (as many as train envs; uniformly random actions, an episode
reset every task's time limit, timed as in training):
``simulator_steps_per_s`` with the env the project builds,
``robosuite_steps_per_s`` with robosuite's own step (which repeats forward
dynamics in each arm's controller) and reset (which rebuilds the MuJoCo
model), ``simulator_speedup`` their ratio, each the median of
``--sim-rounds`` alternating rounds.
"""

from __future__ import annotations

import argparse
import copy
import csv
import multiprocessing
import statistics
import tempfile
import time
from typing import Callable

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table
from stable_baselines3 import SAC
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.utils import get_device
from stable_baselines3.common.vec_env import DummyVecEnv

from dsrl.base_policies import build_base_policy
from dsrl.config import compose_task_config, repo_path
from dsrl.envs.diffusion_env import DiffusionPolicyEnvWrapper
from dsrl.envs.robomimic import LOW_DIM_KEYS, MAX_EPISODE_STEPS, RobomimicLowDimEnv, env_meta_path, load_env_meta
from dsrl.files import write_json
from dsrl.training import build_agent, run, training_device

CONFIGS = {
    "hopper": ("cfg/gym/dsrl_hopper.yaml", []),
    "can": ("cfg/robomimic/dsrl_can.yaml", []),
    "can_256": ("cfg/robomimic/dsrl_can.yaml", ["train.layer_size=256"]),
}
BUFFER_ROWS = 20_000


class ShapeOnlyEnv(gym.Env):
    """An env with the given spaces whose steps cost nothing (the agents only need its spaces here)."""

    def __init__(self, obs_dim: int, action_dim: int):
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (obs_dim,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (action_dim,), np.float32)

    def reset(self, *, seed=None, options=None):
        return np.zeros(self.observation_space.shape, np.float32), {}

    def step(self, action):
        return np.zeros(self.observation_space.shape, np.float32), 0.0, False, False, {"sim_steps": 4}


def median_seconds(work: Callable[[], None], repeats: int, device: torch.device, warmup: int = 1) -> float:
    """Median wall-clock seconds of ``work()`` after ``warmup`` calls (synchronising CUDA around each)."""
    times = []
    for i in range(warmup + repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        work()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def fill_buffer(buffer, rng: np.random.Generator) -> None:
    """Random transitions in the first BUFFER_ROWS rows of an SB3 replay buffer (one env slot)."""
    for name in ("observations", "next_observations", "actions"):
        array = getattr(buffer, name)
        array[:BUFFER_ROWS] = rng.uniform(-1, 1, array[:BUFFER_ROWS].shape).astype(array.dtype)
    buffer.rewards[:BUFFER_ROWS] = rng.normal(size=buffer.rewards[:BUFFER_ROWS].shape)
    buffer.dones[:BUFFER_ROWS] = rng.random(buffer.dones[:BUFFER_ROWS].shape) < 0.01
    buffer.pos = BUFFER_ROWS


def floor_update(model, cfg: DictConfig, device: torch.device) -> Callable[[], None]:
    """The DSRL-NA update as the shortest plain-PyTorch loop, on copies of ``model``'s networks."""
    actor, critic, critic_target, noise_critic = (
        copy.deepcopy(m) for m in (model.actor, model.critic, model.critic_target, model.noise_critic)
    )
    base = model.base_policy
    lr = cfg.train.learning_rate
    fused = {"fused": True} if cfg.train.fused_optimizer else {}
    optim = {
        name: torch.optim.Adam(net.parameters(), lr=lr, **fused)
        for name, net in (("actor", actor), ("critic", critic), ("noise_critic", noise_critic))
    }
    log_alpha = torch.zeros(1, device=device, requires_grad=True)
    alpha_optim = torch.optim.Adam([log_alpha], lr=lr)
    buffer = model.replay_buffer

    def tensor(name: str) -> torch.Tensor:
        return torch.as_tensor(getattr(buffer, name)[:BUFFER_ROWS, 0], device=device)

    obs_all, next_all, act_all = tensor("observations"), tensor("next_observations"), tensor("actions")
    rew_all, done_all = tensor("rewards").unsqueeze(1), tensor("dones").float().unsqueeze(1)
    batch, magnitude, gamma, tau = cfg.train.batch_size, cfg.train.action_magnitude, cfg.train.gamma, cfg.train.tau
    chunk_shape = (-1, base.chunk, base.action_dim)
    online, target = list(critic.parameters()), list(critic_target.parameters())

    def step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def update() -> None:
        for _ in range(cfg.train.utd):
            index = torch.randint(BUFFER_ROWS, (batch,), device=device)
            obs, next_obs, act = obs_all[index], next_all[index], act_all[index]
            noise, log_prob = actor.action_log_prob(obs)
            step(alpha_optim, -(log_alpha * (log_prob + cfg.train.target_entropy).detach()).mean())
            alpha = log_alpha.detach().exp()
            with torch.no_grad():
                next_noise, next_log_prob = actor.action_log_prob(next_obs)
                next_act = base(next_obs, (magnitude * next_noise).view(chunk_shape)).reshape(batch, -1)
                next_q = critic_target.all_q(next_obs, next_act).min(0).values - alpha * next_log_prob.unsqueeze(1)
                target_q = rew_all[index] + (1 - done_all[index]) * gamma * next_q
            q = critic.all_q(obs, act)
            step(optim["critic"], 0.5 * ((q - target_q) ** 2).mean(dim=(1, 2)).sum())
            noise_critic.requires_grad_(False)  # the actor's loss needs no gradients of Q_W's weights
            step(optim["actor"], (alpha * log_prob - noise_critic.all_q(obs, noise).min(0).values).mean())
            noise_critic.requires_grad_(True)
            with torch.no_grad():
                torch._foreach_lerp_(target, online, tau)
        for _ in range(cfg.train.noise_critic_grad_steps):
            obs = obs_all[torch.randint(BUFFER_ROWS, (batch,), device=device)]
            noise = torch.randn(batch, base.chunk * base.action_dim, device=device).clamp(-magnitude, magnitude)
            with torch.no_grad():
                target_q = critic.all_q(obs, base(obs, noise.view(chunk_shape)).reshape(batch, -1))
            step(optim["noise_critic"], 0.5 * F.mse_loss(noise_critic.all_q(obs, noise / magnitude), target_q))

    return update


def dsrl_na_agent(cfg: DictConfig, env, base, device: torch.device, rng: np.random.Generator, **train):
    """The config's DSRL-NA agent (``train`` settings overridden), its buffer filled with random transitions."""
    cfg = OmegaConf.merge(cfg, {"train": {"buffer_size": BUFFER_ROWS + 1, **train}})
    model = build_agent(cfg, env, base, device)
    model.set_logger(Logger(None, []))
    fill_buffer(model.replay_buffer, rng)
    return model


VARIANTS = {
    "compiled": {"torch_compile": True},
    "bf16": {"autocast_bf16": True},
    "compiled_bf16": {"torch_compile": True, "autocast_bf16": True},
}
"""Speed options timed besides the default update (``--compiled``, ``--bf16``, both): ``train`` settings."""


def benchmark_config(
    name: str, device: torch.device, repeats: int, seed: int, extra: list[str], variants: list[str] = ()
) -> dict[str, float]:
    path, overrides = CONFIGS[name]
    cfg = compose_task_config(repo_path(path), ["run_dir=unused", f"device={device}", *overrides, *extra])
    training_device(cfg)  # TF32 on CUDA as in a run (cfg.tf32)
    torch.manual_seed(seed)
    base = build_base_policy(OmegaConf.to_container(cfg.base_policy, resolve=True)).to(device).freeze()
    chunk_dim = base.chunk * base.action_dim
    env = DummyVecEnv([lambda: ShapeOnlyEnv(base.cond_dim, chunk_dim)])
    rng = np.random.default_rng(seed)
    model = dsrl_na_agent(cfg, env, base, device, rng)
    batch, utd = cfg.train.batch_size, cfg.train.utd
    sac = SAC(
        "MlpPolicy",
        env,
        buffer_size=BUFFER_ROWS + 1,
        batch_size=batch,
        policy_kwargs=dict(net_arch=[cfg.train.layer_size] * cfg.train.num_layers, n_critics=cfg.train.n_critics),
        device=device,
        seed=seed,
    )
    sac.set_logger(Logger(None, []))
    fill_buffer(sac.replay_buffer, rng)
    obs = {n: torch.rand(n, base.cond_dim, device=device) * 2 - 1 for n in (1, 256)}
    noise = {n: torch.randn(n, base.chunk, base.action_dim, device=device) for n in (1, 256)}

    result = {
        "dsrl_na_update_s": median_seconds(lambda: model.train(utd, batch), repeats, device),
        "floor_update_s": median_seconds(floor_update(model, cfg, device), repeats, device),
        "sb3_sac_update_s": median_seconds(lambda: sac.train(utd, batch), repeats, device),
    }
    result["dsrl_na_over_floor"] = result["dsrl_na_update_s"] / result["floor_update_s"]
    for variant in variants:  # the first call (compiling, if so) is the warm-up
        model = dsrl_na_agent(cfg, env, base, device, rng, **VARIANTS[variant])
        result[f"dsrl_na_{variant}_update_s"] = median_seconds(lambda: model.train(utd, batch), repeats, device)
        result[f"dsrl_na_{variant}_over_floor"] = result[f"dsrl_na_{variant}_update_s"] / result["floor_update_s"]
    for n in (1, 256):
        seconds = median_seconds(lambda: base(obs[n], noise[n]), max(repeats, 20), device, warmup=3)
        result[f"base_policy_samples_per_s_batch_{n}"] = n / seconds
    wrapper = DiffusionPolicyEnvWrapper(
        DummyVecEnv([lambda: ShapeOnlyEnv(base.cond_dim, chunk_dim)] * 4), base, cfg.train.action_magnitude
    )
    wrapper.reset()
    noise_actions = rng.uniform(-1, 1, (4, chunk_dim)).astype(np.float32)
    inner = wrapper.venv
    raw = median_seconds(lambda: inner.step(noise_actions), max(repeats, 50), device, warmup=5)
    wrapped = median_seconds(lambda: wrapper.step(noise_actions), max(repeats, 50), device, warmup=5)
    result["dsrl_sac_wrapper_overhead_s_per_env_step"] = (wrapped - raw) / 4
    return result


def end_to_end(name: str, device: torch.device, env_steps: int, seed: int, extra: list[str]) -> float:
    """Simulator steps per second of ``learn()`` once learning began (4 subprocess train envs).

    Read from the last log dump; the final evaluation's dump holds the training
    rate recorded on the last training step, before that evaluation ran.
    """
    path, overrides = CONFIGS[name]
    cfg = compose_task_config(
        repo_path(path),
        [
            f"run_dir={tempfile.mkdtemp(prefix=f'dsrl_benchmark_{name}_')}",
            f"device={device}",
            "wandb.mode=disabled",
            "tensorboard=false",
            "progress_bar=false",
            "env.n_envs=4",
            "env.n_eval_envs=1",
            "eval.interval_env_steps=0",
            "eval.n_episodes=1",
            "log_interval=1",
            "eval.stochastic=false",
            "video.every_evals=0",
            "save_replay_buffer=false",
            f"seed={seed}",
            *overrides,
            *extra,
        ],
    )
    warmup_transitions = cfg.train.init_rollout_steps * cfg.env.n_envs
    cfg.train.total_env_steps = warmup_transitions * cfg.base_policy.horizon_steps + env_steps
    run(cfg)
    with open(f"{cfg.run_dir}/progress.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/env_steps_per_s") and float(r["train/gradient_steps"]) > 0]
    return float(rows[-1]["train/env_steps_per_s"])


def simulator_rate(task: str, project_env: bool, steps: int, seed: int) -> float:
    """Steps per second of one Robomimic env under uniformly random actions, its episodes' resets included: the
    project's env (split step, fast reset) or robosuite's own step and reset."""
    env = RobomimicLowDimEnv(
        load_env_meta(env_meta_path(task)), LOW_DIM_KEYS[task], split_dynamics=project_env, fast_reset=project_env
    )
    actions = np.random.default_rng(seed).uniform(-1, 1, (steps, *env.action_space.shape))
    start = time.perf_counter()
    for i, action in enumerate(actions):
        if i % MAX_EPISODE_STEPS[task] == 0:
            env.reset(seed=seed + i)
        env.step(action)
    elapsed = time.perf_counter() - start
    env.close()
    return steps / elapsed


def simulators(task: str, procs: int, steps: int, rounds: int, seed: int) -> dict[str, float]:
    """Summed steps per second of ``procs`` simulators side by side, ours against robosuite's own step and reset."""
    rates = {True: [], False: []}
    with multiprocessing.get_context("spawn").Pool(procs) as pool:
        for _ in range(rounds):
            for project_env in rates:
                jobs = [(task, project_env, steps, seed + 1000 * k) for k in range(procs)]
                rates[project_env].append(sum(pool.starmap(simulator_rate, jobs)))
    ours, stock = statistics.median(rates[True]), statistics.median(rates[False])
    return {"simulator_steps_per_s": ours, "robosuite_steps_per_s": stock, "simulator_speedup": ours / stock}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="hopper,can,can_256", help=f"comma-separated, of {list(CONFIGS)}")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per measurement (after one warm-up)")
    parser.add_argument("--compiled", action="store_true", help="also time the update with train.torch_compile=true")
    parser.add_argument("--bf16", action="store_true", help="also time the update with train.autocast_bf16=true")
    parser.add_argument("--e2e", default="", help="comma-separated configs for the end-to-end learn() measurement")
    parser.add_argument("--e2e-steps", type=int, default=2000, help="simulator steps timed after the warm-up")
    parser.add_argument("--sim", default="", help="comma-separated Robomimic tasks whose simulators to time alone")
    parser.add_argument("--sim-procs", type=int, default=4, help="simulator processes side by side")
    parser.add_argument("--sim-steps", type=int, default=600, help="timed steps per simulator process and round")
    parser.add_argument("--sim-rounds", type=int, default=3, help="alternating rounds of ours and robosuite's own")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write the results to this file")
    parser.add_argument(
        "overrides", nargs="*", help="config overrides for every config, e.g. train.fused_optimizer=false"
    )
    args = parser.parse_args()
    device = get_device(args.device)
    report = {
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "sim_procs": args.sim_procs,
        "overrides": args.overrides,
        "configs": {},
    }
    variants = [v for v, wanted in (("compiled", args.compiled), ("bf16", args.bf16)) if wanted]
    variants += ["compiled_bf16"] if args.compiled and args.bf16 else []
    for name in filter(None, args.configs.split(",")):
        report["configs"][name] = benchmark_config(name, device, args.repeats, args.seed, args.overrides, variants)
    for name in filter(None, args.e2e.split(",")):
        report["configs"].setdefault(name, {})["end_to_end_sim_steps_per_s"] = end_to_end(
            name, device, args.e2e_steps, args.seed, args.overrides
        )
    for task in filter(None, args.sim.split(",")):
        report["configs"].setdefault(task, {}).update(
            simulators(task, args.sim_procs, args.sim_steps, args.sim_rounds, args.seed)
        )
    table = Table(title=f"DSRL speed on {device} ({torch.get_num_threads()} threads)")
    table.add_column("measure")
    for name in report["configs"]:
        table.add_column(name, justify="right")
    measures = sorted({k for values in report["configs"].values() for k in values}, key=list(MEASURES).index)
    for measure in measures:
        cells = (MEASURES[measure](v[measure]) if measure in v else "-" for v in report["configs"].values())
        table.add_row(measure, *cells)
    Console().print(table)
    if args.json:
        write_json(args.json, report, indent=2)


MEASURES = {
    "dsrl_na_update_s": "{:.4f}".format,
    "floor_update_s": "{:.4f}".format,
    "dsrl_na_over_floor": "{:.2f}x".format,
    **{
        measure: fmt
        for variant in VARIANTS
        for measure, fmt in (
            (f"dsrl_na_{variant}_update_s", "{:.4f}".format),
            (f"dsrl_na_{variant}_over_floor", "{:.2f}x".format),
        )
    },
    "sb3_sac_update_s": "{:.4f}".format,
    "dsrl_sac_wrapper_overhead_s_per_env_step": "{:.2e}".format,
    "base_policy_samples_per_s_batch_1": "{:,.0f}".format,
    "base_policy_samples_per_s_batch_256": "{:,.0f}".format,
    "end_to_end_sim_steps_per_s": "{:.1f}".format,
    "simulator_steps_per_s": "{:.1f}".format,
    "robosuite_steps_per_s": "{:.1f}".format,
    "simulator_speedup": "{:.2f}x".format,
}


if __name__ == "__main__":
    main()
