"""The explorer in the browser: `python explore.py run=outputs/demo/locsens_raw eval=[outputs/demo/evaluation]`."""

import hydra
from omegaconf import DictConfig

from locsens.config import validate_explore_config


@hydra.main(version_base="1.3", config_path="conf", config_name="explore")
def main(cfg: DictConfig) -> None:
    from locsens.explore.server import check_port, serve
    from locsens.explore.session import Explorer

    cfg = validate_explore_config(cfg)
    check_port(cfg.host, cfg.port)  # before loading the run: a port in use is known at once
    explorer = Explorer(cfg.run, list(cfg.eval), cfg.dataset_path, cfg.images, cfg.dtype)
    serve(explorer, cfg.host, cfg.port)


if __name__ == "__main__":
    main()
