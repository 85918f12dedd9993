"""Tag one photo where it was taken: ``python tag.py image=photo.jpg lat=48.858 lon=2.294 run=<LocSens run>``.

The photo goes the whole way a training photo went: decoded and preprocessed as extraction does
(``locsens.features.extract.load_image``), through the backbone the run's feature store records
(refused when the features were simulated or came from another backbone or weights file), through
the agnostic model whose embeddings LocSens was trained on (its checkpoint, checked by sha256), then
scored by LocSens at each place with the exact scoring engine. Nothing is written.
"""

from __future__ import annotations

from pathlib import Path

import torch

from locsens.artifacts import file_ref, short
from locsens.data.store import FeatureStore
from locsens.eval.methods import open_locsens_run
from locsens.metrics.tagging import place_name_mask, ranked_topk


class TagPhotoError(ValueError):
    """The photo cannot be tagged by this run (simulated features, another backbone, a missing model)."""


def _backbone_of(features_path: str, backbone: str | None, weights: str | None):
    from locsens.features.backbones import load_backbone, parse_extractor

    extractor = FeatureStore(features_path).extractor
    made_by = parse_extractor(extractor)
    if made_by is None:
        raise TagPhotoError(
            f"the run was trained on features that no backbone made ({features_path}: extractor {extractor!r}, "
            "a simulated world): there is no backbone to run on a photo; train on features extracted from images "
            "(python extract_features.py ...)"
        )
    if backbone is not None and backbone != made_by["name"]:
        raise TagPhotoError(
            f"backbone={backbone}: the run's features ({features_path}) came from {made_by['name']}, "
            f"not {backbone}; leave backbone unset or pass backbone={made_by['name']}"
        )
    net, spec, got = load_backbone(made_by["name"], weights)
    sha = parse_extractor(got)["sha256"]
    if sha != made_by["sha256"]:
        raise TagPhotoError(
            f"the {made_by['name']} weights loaded ({got}) are not those the features were extracted with "
            f"({made_by['weights']}, sha256 {short(made_by['sha256'])}); pass weights=<that file>"
        )
    return net, spec, got


def tag_photo(image, places, run, k: int = 10, backbone=None, weights=None, dtype: str = "fp32") -> dict:
    """Top-k tags of the photo ``image`` at each ``(lat, lon)`` of ``places`` by the LocSens run ``run``,
    and by its agnostic model (once: it ignores the place). Returns the rankings with scores."""
    from locsens.export import load_tagger
    from locsens.features.extract import load_image

    opened = open_locsens_run(run, dtype=dtype)  # refuses a run that is not LocSens, or stores that moved
    dataset, locsens, agnostic = opened.dataset, opened.locsens, opened.agnostic
    if k > dataset.num_tags:
        raise TagPhotoError(f"k={k}: the vocabulary has {dataset.num_tags} tags")
    embeddings_path, exported = locsens.store.path, locsens.store.made_from
    features_path = (exported.get("features") or {}).get("path")
    agnostic_ckpt = (exported.get("checkpoint") or {}).get("path")
    if not features_path or not Path(features_path).is_file():
        raise TagPhotoError(
            f"{embeddings_path} was exported from the feature store {features_path!r}, which does not exist: "
            "its extractor record says which backbone to run on a photo; restore it"
        )
    net, spec, extractor = _backbone_of(features_path, backbone, weights)  # refuses simulated features first
    if not agnostic_ckpt or not Path(agnostic_ckpt).is_file():
        raise TagPhotoError(
            f"{embeddings_path} does not name an existing agnostic checkpoint it was exported from ({agnostic_ckpt!r}): "
            "a photo cannot be embedded like the training photos; export the embeddings with python export.py "
            "checkpoint=<MCC run>"
        )
    if file_ref(agnostic_ckpt)["sha256"] != exported["checkpoint"].get("sha256"):
        raise TagPhotoError(
            f"{agnostic_ckpt} changed since {embeddings_path} was exported from it; re-export and retrain LocSens"
        )
    pixels, why = load_image(str(image), spec.preprocessing)
    if pixels is None:
        raise TagPhotoError(f"image={image}: {why}")
    agnostic_model = load_tagger(agnostic_ckpt)
    with torch.no_grad():
        features = net.features(pixels[None])
        embedding = agnostic_model.image_embedding(features).float()
    is_place = place_name_mask(dataset.vocab, dataset.place_names).numpy()

    def entries(ids, scores):
        return [{"tag": dataset.vocab[t], "score": float(s), "place": bool(is_place[t])} for t, s in zip(ids, scores)]

    agnostic_scores = agnostic.scores_of(embedding)
    agnostic_ids = ranked_topk(agnostic_scores, k)[0].tolist()
    out = {
        "image": str(image),
        "backbone": extractor,
        "method": locsens.name,
        "dtype": locsens.engine.dtype_used,
        "agnostic": {"name": agnostic.name, "tags": entries(agnostic_ids, agnostic_scores[0, agnostic_ids].tolist())},
        "places": [],
    }
    lat = torch.tensor([p[0] for p in places], dtype=torch.float64)
    lon = torch.tensor([p[1] for p in places], dtype=torch.float64)
    with torch.no_grad():
        scores, ids = locsens.engine.score_tags(embedding.expand(len(places), -1), lat, lon, k=k)
    for (la, lo), s, i in zip(places, scores.tolist(), ids.tolist()):
        out["places"].append({"lat": la, "lon": lo, "tags": entries(i, s)})
    return out


def format_tags(result: dict) -> str:
    """The rankings as a table: one column per place (LocSens), then the agnostic model's."""
    places = result["places"]
    k = len(places[0]["tags"])
    header = [f"{result['method']} at {p['lat']:.3f}, {p['lon']:.3f}" for p in places] + [
        f"{result['agnostic']['name']} (anywhere)"
    ]
    columns = [p["tags"] for p in places] + [result["agnostic"]["tags"]]
    cell = lambda e: f"{e['tag']}{' [place]' if e['place'] else ''} {e['score']:.4f}"
    width = max(len(h) for h in header)
    width = max([width] + [len(cell(e)) for c in columns for e in c]) + 2
    lines = [
        f"{result['image']}: top-{k} tags ({result['backbone'].split(' ')[0]} features, scoring {result['dtype']})"
    ]
    lines.append("rank  " + "".join(h.ljust(width) for h in header))
    for r in range(k):
        lines.append(f"{r + 1:>4}  " + "".join((cell(c[r]) if r < len(c) else "").ljust(width) for c in columns))
    if len(places) > 1:
        first = {e["tag"] for e in places[0]["tags"]}
        for p in places[1:]:
            here = {e["tag"] for e in p["tags"]}
            gained, lost = sorted(here - first), sorted(first - here)
            lines.append(
                f"at {p['lat']:.3f}, {p['lon']:.3f} vs the first place: + {', '.join(gained) or '-'}; - {', '.join(lost) or '-'}"
            )
    return "\n".join(lines)


__all__ = ["TagPhotoError", "format_tags", "tag_photo"]
