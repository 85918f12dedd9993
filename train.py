"""Train any model of the project: `python train.py experiment=mcc` (see conf/train.yaml)."""

import hydra
from omegaconf import DictConfig

from locsens.train import train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    return metrics.get("best_score")  # what a Hydra sweeper (e.g. Optuna) would optimise


if __name__ == "__main__":
    main()
