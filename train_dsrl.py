"""Train DSRL on a task: python train_dsrl.py --config-path=cfg/<suite> --config-name=dsrl_<task>.yaml [overrides]"""

import sys

import hydra
from omegaconf import DictConfig

import dsrl.config  # noqa: F401  (registers the ${repo:...} resolver)
from dsrl.interrupts import RunInterrupted
from dsrl.training import run


def hydra_dir_follows_run_dir(argv: list[str]) -> list[str]:
    """``argv`` with ``hydra.run.dir=DIR`` added after a ``run_dir=DIR`` (unless it sets ``hydra.run.dir`` itself), so
    Hydra's own files (``.hydra/``, ``train_dsrl.log``) go into the run's directory, not ``runs/<task>/<date>/``."""
    run_dirs = [arg.split("=", 1)[1] for arg in argv if arg.startswith("run_dir=")]
    if run_dirs and not any(arg.startswith("hydra.run.dir=") for arg in argv):
        return [*argv, f"hydra.run.dir={run_dirs[-1]}"]
    return argv


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
