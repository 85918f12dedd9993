"""Prepare the stores: `python prepare.py world=demo` (simulated world) or `source=yfcc source.tsv=[...]`."""

import hydra
from omegaconf import DictConfig

from locsens.prepare import prepare


@hydra.main(version_base="1.3", config_path="conf", config_name="prepare")
def main(cfg: DictConfig) -> None:
    prepare(cfg)


if __name__ == "__main__":
    main()
