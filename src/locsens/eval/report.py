"""Tables (markdown, mirroring the paper) and figures (PNG) of an evaluation run."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from locsens.files import atomic_path, write_text_atomic  # noqa: E402
from locsens.geo import geodesic_km  # noqa: E402
from locsens.metrics.retrieval import location_sensitive_precision, precision_at_k  # noqa: E402


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def write_tables(path: Path, results: dict) -> str:
    """The paper's tables as markdown; returns the text (also written to ``path``)."""
    cands = results.get("n_retrieval_candidates", results["n_test_images"])
    cand_note = "" if cands == results["n_test_images"] else f" over {cands} candidate images"
    out = [
        f"# Evaluation ({results['n_test_images']} test images, {results['n_location_queries']} location queries{cand_note}, "
        f"{results['n_agnostic_queries']} tag queries; commit {results['git_commit'][:10]})\n",
        *([f"<!-- evaluation {results['evaluation_id']} -->\n"] if results.get("evaluation_id") else []),
    ]
    split = results.get("split") or {}
    if split.get("by") not in (None, "random"):
        extra = f" (H3 resolution {split.get('cell_resolution')})" if split.get("by") == "cell" else ""
        out.append(f"Test split drawn by {split['by']}{extra}: test photos share no {split['by']} with training.\n")
    ks = (results.get("config") or {}).get("tagging", {}).get("ks") or [1, 10, 50]  # the columns asked for
    mode = results.get("locsens_scoring")
    if mode and mode.get("pairs_scored"):
        out.append(f"LocSens scoring: tagging {_mode(mode['tagging'])}; retrieval {_mode(mode['retrieval'])}.\n")
    for key, title in (
        ("with_places", "Image tagging"),
        ("places_omitted", "Image tagging, place names omitted (supp. Table 2)"),
    ):
        columns = [f"A@{k}" for k in ks] + ["%pred", "%cpred"]
        rows = [[name] + [_fmt(r[key].get(c)) for c in columns] for name, r in results["tagging"].items()]
        out += [f"## {title}\n", markdown_table(["method", *columns], rows), ""]
    places = {n: r["place_consistency"] for n, r in results["tagging"].items() if "place_consistency" in r}
    if places:
        first = next(iter(places.values()))
        k = next(c.split("@")[1] for c in first if c.startswith("wrong_place@") and "|" not in c)
        columns = [
            f"wrong_place@{k}",
            f"wrong_country@{k}",
            "wrong_share",
            f"wrong_place@{k}|gt_no_places",
            f"place_names@{k}",
        ]
        header = [
            "method",
            f"% images: wrong place in top-{k}",
            "% images: wrong country/continent",
            "% of predicted place names wrong",
            "% images w/o place in truth: wrong place",
            f"place names per top-{k}",
        ]
        rows = [[name] + [_fmt(v.get(c)) for c in columns] for name, v in places.items()]
        km = (results.get("config") or {}).get("tagging", {}).get("place_consistency_town_km", 100)
        out += [
            f"## Place consistency of the top-{k} (a town within {km:g} km of the photo is not wrong)\n",
            markdown_table(header, rows),
            "",
        ]
    keys = results["threshold_keys"]
    cols = ["agnostic" if key == "inf" else key.replace("km", " km") for key in keys]
    rows = [[name] + [_fmt(v.get(key)) for key in keys] for name, v in results["location_sensitive_retrieval"].items()]
    out += ["## Location-sensitive retrieval P@10\n", markdown_table(["method"] + cols, rows), ""]
    rows = [[name, _fmt(v)] for name, v in results["location_agnostic_retrieval"].items()]
    out += ["## Location-agnostic retrieval P@10 (all tags)\n", markdown_table(["method", "P@10"], rows), ""]
    text = "\n".join(out)
    write_text_atomic(path, text)
    return text


def _mode(mode) -> str:
    if mode == "exhaustive":
        return "exhaustive (every candidate scored)"
    sizes = ", ".join(f"{k} {v}" for k, v in mode["cascade"].items())
    return f"cascade (shortlist: {sizes}; reranked exactly)"


# ---------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------
def write_figures(fig_dir: Path, results, methods, ds, q, candidates, ret_preds, agn_tags, agn_preds) -> list[str]:
    """Supplementary Fig. 3 and 4 and the qualitative figures; returns the PNG paths."""
    fig_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    if agn_preds:
        paths.append(figure_p10_vs_frequency(fig_dir, ds, candidates, agn_tags, agn_preds))
    aware = {n: ids for n, ids in ret_preds.items() if getattr(methods.get(n), "location_aware", False)} or ret_preds
    if aware:
        paths.append(figure_continents(fig_dir, results, ds, q, candidates, aware))
    from locsens.eval.methods import LocSensMethod

    loc_methods = [m for m in methods.values() if isinstance(m, LocSensMethod)]
    if loc_methods:
        paths += figures_qualitative(fig_dir, ds, candidates, loc_methods[0])
    learned = [(n, m) for n, m in methods.items() if getattr(m, "net", None) is not None]
    if learned:
        paths.append(figure_range_maps(fig_dir, ds, *learned[0]))
    return paths


def range_map_tags(ds, n: int = 6) -> list[int]:
    """Tags worth a range map: the most frequent country name, town name and non-place tags."""
    from locsens.metrics.places import PlaceGazetteer

    gaz = PlaceGazetteer.from_dataset(ds)
    is_place = gaz.is_place_name()
    names = {lvl: np.diff(gaz.indptr[lvl]) > 0 for lvl in ("country", "town")}
    out = []
    for want in (names["country"], names["country"], names["town"], names["town"], ~is_place, ~is_place):
        out.append(next(t for t in range(ds.num_tags) if want[t] and t not in out))  # frequency-ordered
    return out[:n]


def figure_range_maps(fig_dir: Path, ds, name: str, method, step_deg: float = 1.0) -> str:
    """Per-tag range maps of a learned prior: sigmoid(logit_t(x)) over a lat/lon grid, the training photos
    carrying the tag on top."""
    tags = range_map_tags(ds)
    lat = np.arange(-89.5, 90, step_deg)
    lon = np.arange(-179.5, 180, step_deg)
    glat, glon = np.meshgrid(lat, lon, indexing="ij")
    net = method.net
    with torch.no_grad():
        feats = net.features(torch.from_numpy(glat.ravel()).float(), torch.from_numpy(glon.ravel()).float())
        prob = torch.sigmoid(feats @ net.head.weight[tags].T + net.head.bias[tags]).numpy()
    row_of = np.repeat(np.arange(len(ds)), np.diff(ds.tags_indptr))
    in_train = ds.split[row_of] == 0
    fig, axes = plt.subplots(2, 3, figsize=(15, 6.5))
    for ax, t, p in zip(axes.ravel(), tags, prob.T):
        im = ax.imshow(p.reshape(glat.shape), origin="lower", extent=(-180, 180, -90, 90), cmap="magma", vmin=0)
        rows = np.unique(row_of[in_train & (ds.tags_indices == t)])
        ax.scatter(ds.lon[rows], ds.lat[rows], s=1, c="cyan", alpha=0.3, linewidths=0)
        ax.set(title=f"{ds.vocab[t]} ({len(rows)} training photos)", xticks=[], yticks=[])
        fig.colorbar(im, ax=ax, shrink=0.7)
    fig.suptitle(f"{name}: learned prior p(tag | location), training photos with the tag in cyan")
    return _save(fig, fig_dir / "range_maps.png")


def figure_p10_vs_frequency(fig_dir: Path, ds, candidates, agn_tags, agn_preds) -> str:
    """Fig. 3 (supp.): location-agnostic P@10 as a function of the query tag's training frequency."""
    in_train = np.repeat(ds.split == 0, np.diff(ds.tags_indptr))
    train_count = np.bincount(ds.tags_indices[in_train], minlength=ds.num_tags)
    fig, ax = plt.subplots(figsize=(6, 4))
    freq = train_count[agn_tags.numpy()]
    edges = np.unique(np.geomspace(max(freq.min(), 1), max(freq.max(), 2) + 1, 7).astype(int))
    b = np.digitize(freq, edges)
    for name, ids in agn_preds.items():
        p = precision_at_k(torch.from_numpy(ids), agn_tags, candidates).numpy()
        bins = [i for i in np.unique(b) if 0 < i < len(edges)]
        ax.plot(
            [np.sqrt(edges[i - 1] * edges[i]) for i in bins],
            [100 * p[b == i].mean() for i in bins],
            marker="o",
            label=name,
        )
    ax.set(
        xscale="log",
        xlabel="query tag's training images",
        ylabel="P@10 (%)",
        title="Location-agnostic P@10 vs tag frequency",
    )
    ax.legend()
    return _save(fig, fig_dir / "p10_vs_tag_frequency.png")


def figure_continents(fig_dir: Path, results, ds, q, candidates, aware: dict) -> str:
    """Fig. 4 (supp.): training images per continent and P@10 at 750 km per continent (best location-aware method)."""
    best = max(aware, key=lambda n: results["location_sensitive_retrieval"][n].get("750km", -1))
    p = location_sensitive_precision(torch.from_numpy(aware[best]), q, candidates, thresholds_km=[750.0])[:, 0].numpy()
    names = ds.places["continent"]
    qcont = ds.place_index["continent"][q.row.numpy()]
    n_train = np.bincount(ds.place_index["continent"][ds.split_rows("train")], minlength=len(names))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.bar(names, n_train)
    a1.set(title="training images per continent")
    a2.bar(names, [100 * p[qcont == i].mean() if (qcont == i).any() else 0 for i in range(len(names))])
    a2.set(title=f"P@10 at 750 km per continent ({best})", ylabel="%")
    for a in (a1, a2):
        a.tick_params(axis="x", rotation=45)
    return _save(fig, fig_dir / "continents.png")


def figures_qualitative(fig_dir: Path, ds, candidates, m) -> list[str]:
    """Qualitative tagging (paper Fig. 5: the top-5 tags of one image at three faked locations) and retrieval
    (paper Fig. 1, 2: for a tag, the top result at several locations) of the LocSens method ``m``."""
    paths = []
    sites = far_apart_sites(ds, 3)
    cand = candidates.rows.numpy()
    rows = cand[:4]
    fig, ax = plt.subplots(figsize=(10, 1 + 0.9 * len(rows)))
    ax.axis("off")
    lines = []
    for r in rows:
        true = ", ".join(ds.vocab[t] for t in ds.tags_of(r)[:6])
        lines.append(f"image {ds.photo_id[r]} (true tags: {true})")
        for name, la, lo in sites:
            s = m.tag_scores(np.array([r]), lat=[la], lon=[lo])
            top = torch.topk(s[0], 5).indices.tolist()
            lines.append(f"    at {name:<20s}: " + ", ".join(ds.vocab[t] for t in top))
    ax.text(0, 1, "\n".join(lines), family="monospace", va="top", fontsize=8)
    ax.set_title(f"{m.name}: top-5 tags of the same image at three locations")
    paths.append(_save(fig, fig_dir / "qualitative_tagging.png"))

    # Qualitative retrieval (paper Fig. 1, 2): for a tag, the top result at several locations
    tag_name = next((t for t in ("beach", "temple", "bridge", "snow") if t in ds.vocab), ds.vocab[0])
    t = ds.vocab.index(tag_name)
    ids = m.retrieve(
        torch.full((len(sites),), t), torch.tensor([s[1] for s in sites]), torch.tensor([s[2] for s in sites]), cand, 1
    )
    fig, ax = plt.subplots(figsize=(10, 1 + 0.6 * len(sites)))
    ax.axis("off")
    lines = []
    for (name, la, lo), i in zip(sites, ids[:, 0].tolist()):
        r = cand[i]
        d = float(geodesic_km(la, lo, ds.lat[r], ds.lon[r]))
        where = f"{ds.places['town'][ds.place_index['town'][r]]}, {ds.places['country'][ds.place_index['country'][r]]}"
        lines.append(
            f"query '{tag_name}' near {name:<16s} -> {ds.photo_id[r]} in {where} ({d:.0f} km): "
            + ", ".join(ds.vocab[x] for x in ds.tags_of(r)[:6])
        )
    ax.text(0, 1, "\n".join(lines), family="monospace", va="top", fontsize=8)
    ax.set_title(f"{m.name}: top result for '{tag_name}' at several locations")
    paths.append(_save(fig, fig_dir / "qualitative_retrieval.png"))
    return paths


def far_apart_sites(ds, n: int) -> list[tuple[str, float, float]]:
    """The most photographed town of each of the ``n`` most photographed continents (name, lat, lon)."""
    town, cont = ds.place_index["town"], ds.place_index["continent"]
    sites = []
    for c in np.argsort(-np.bincount(cont, minlength=len(ds.places["continent"])), kind="stable")[:n]:
        t = int(np.argmax(np.bincount(town[cont == c], minlength=len(ds.places["town"]))))
        here = town == t
        sites.append((ds.places["town"][t], float(ds.lat[here].mean()), float(ds.lon[here].mean())))
    return sites


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)
    return str(path)
