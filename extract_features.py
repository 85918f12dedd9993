"""Extract image features: `python extract_features.py images=/data/photos [backbone=resnet50 backbone.weights=...]`."""

import hydra
from omegaconf import DictConfig

from locsens.features.extract import extract_from_config


@hydra.main(version_base="1.3", config_path="conf", config_name="extract")
def main(cfg: DictConfig) -> None:
    extract_from_config(cfg)


if __name__ == "__main__":
    main()
