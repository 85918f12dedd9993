"""Evaluate trained models: `python evaluate.py [runs=[outputs/...]] [world=demo] [limit_test_images=2000]`."""

import hydra
from omegaconf import DictConfig

from locsens.eval.pipeline import evaluate


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
