"""A DSRL-NA run whose actor never learns: the critics evaluate a fixed noise policy, with no maximisation.

    python scripts/frozen_actor_run.py --config-path=$PWD/cfg/robomimic --config-name=dsrl_lift.yaml \\
        train.actor_zero_init=true train.backup_entropy=false train.bootstrap_time_limit=false [overrides]

Takes ``train_dsrl.py``'s config and overrides, and runs it with the actor's
optimizer steps skipped, so the agent keeps playing the noise of its initial
actor (with ``train.actor_zero_init=true``: action_magnitude x tanh(N(0, I)) in
every state, mean 0) while Q_A and Q_W learn as usual. Then
``scripts/diagnose_critics.py RUN_DIR`` compares Q_A of the played chunks with
the returns their episodes earned: if the TD machinery overrated chunks by
itself, it would show here; if Q_A only overrates them in a learning run, the
actor's search over noise makes the overrating.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

import dsrl.training as training
from dsrl.config import hydra_dir_follows_run_dir  # (importing dsrl.config registers the ${repo:...} resolver)
from dsrl.interrupts import RunInterrupted


def with_frozen_actor(make_agent):
    """``make_agent`` (``build_agent``, or ``load_agent`` on resume) with its agent's actor optimizer skipping steps."""

    def make(*args, **kwargs):
        agent = make_agent(*args, **kwargs)
        agent.actor.optimizer.step = lambda closure=None: None
        return agent

    return make


@hydra.main(version_base="1.3", config_path=None, config_name=None)
def main(cfg: DictConfig) -> None:
    if cfg.algorithm != "dsrl_na":
        raise ValueError(f"algorithm={cfg.algorithm!r}: the frozen-actor run is DSRL-NA's")
    training.build_agent = with_frozen_actor(training.build_agent)
    training.load_agent = with_frozen_actor(training.load_agent)
    try:
        training.run(cfg)
    except RunInterrupted as stop:
        print(stop, file=sys.stderr)
        sys.exit(stop.exit_status)


if __name__ == "__main__":
    sys.argv = hydra_dir_follows_run_dir(sys.argv)
    main()
