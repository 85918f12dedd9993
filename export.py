"""Export a trained agnostic model's embeddings: `python export.py checkpoint=<run>/checkpoints/<best>.ckpt`."""

import hydra
from omegaconf import DictConfig

from locsens.config import validate_export_config
from locsens.export import export_embeddings


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def main(cfg: DictConfig) -> None:
    cfg = validate_export_config(cfg)
    path = export_embeddings(
        cfg.checkpoint, cfg.dataset_path, cfg.features_path, cfg.embeddings_path, overwrite=cfg.overwrite
    )
    print(path)


if __name__ == "__main__":
    main()
