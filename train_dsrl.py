"""Train DSRL on a task: python train_dsrl.py --config-path=cfg/<suite> --config-name=dsrl_<task>.yaml [overrides]"""

import hydra
from omegaconf import DictConfig

import dsrl.config  # noqa: F401  (registers the ${repo:...} resolver)
from dsrl.training import run


@hydra.main(version_base="1.3", config_path=None, config_name=None)
def main(cfg: DictConfig) -> None:
    result = run(cfg)
    print("final evaluation: " + ", ".join(f"{k}={v:.4g}" for k, v in result.items()))


if __name__ == "__main__":
    main()
