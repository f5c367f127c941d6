"""Train DSRL on a task: python train_dsrl.py --config-path=cfg/<suite> --config-name=dsrl_<task>.yaml [overrides]"""

import sys

import hydra
from omegaconf import DictConfig

from dsrl.config import hydra_dir_follows_run_dir  # (importing dsrl.config registers the ${repo:...} resolver)
from dsrl.interrupts import RunInterrupted
from dsrl.training import run


@hydra.main(version_base="1.3", config_path=None, config_name=None)
def main(cfg: DictConfig) -> None:
    try:
        result = run(cfg)
    except RunInterrupted as stop:
        print(stop, file=sys.stderr)
        sys.exit(stop.exit_status)
    print("final evaluation: " + ", ".join(f"{k}={v:.4g}" for k, v in result.items()))


if __name__ == "__main__":
    sys.argv = hydra_dir_follows_run_dir(sys.argv)
    main()
