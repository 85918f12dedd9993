"""Tag one photo where it was taken: `python tag.py image=photo.jpg lat=48.858 lon=2.294 run=<LocSens run dir>`."""

import hydra
from omegaconf import DictConfig, OmegaConf

from locsens.config import validate_tag_config


@hydra.main(version_base="1.3", config_path="conf", config_name="tag")
def main(cfg: DictConfig) -> None:
    from locsens.tag_photo import format_tags, tag_photo

    cfg = validate_tag_config(cfg)
    backbone = cfg.backbone.name if cfg.get("backbone") else None
    asked = cfg.backbone.weights if cfg.get("backbone") and not OmegaConf.is_missing(cfg.backbone, "weights") else None
    weights = cfg.weights or asked
    places = [(float(cfg.lat), float(cfg.lon))] + [(float(a), float(b)) for a, b in cfg.compare]
    print(format_tags(tag_photo(cfg.image, places, cfg.run, cfg.k, backbone, weights, cfg.dtype)))


if __name__ == "__main__":
    main()
