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
from locsens.worldmap import draw_world, fit_latitudes, link  # noqa: E402


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
    from locsens.eval.methods import EmbeddingMethod, LocSensMethod

    loc_methods = [m for m in methods.values() if isinstance(m, LocSensMethod)]
    if loc_methods:
        embedded = [m for m in methods.values() if isinstance(m, EmbeddingMethod)]
        # the agnostic model beside LocSens: MCC (the paper's best) where evaluated, else the first one
        agnostic = next((m for m in embedded if m.name == "mcc"), embedded[0] if embedded else None)
        paths += figures_qualitative(fig_dir, ds, candidates, loc_methods[0], agnostic)
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
    train_count = ds.tag_counts("train")
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


def figures_qualitative(fig_dir: Path, ds, candidates, m, agnostic=None, n_photos: int = 2, k: int = 5) -> list[str]:
    """Qualitative figures of the LocSens method ``m`` as maps.

    Tagging (paper Fig. 5): ``n_photos`` test photos, each on a world map scored at its own place and at
    three far-apart probe places, every place labelled with its top-``k`` tags (place names in blue,
    the photo's true tags in bold green). Retrieval (paper Fig. 1, 2): for one tag, the query places and
    the top-``k`` photos for each, with their distances; LocSens beside the agnostic method ``agnostic``
    (an :class:`~locsens.eval.methods.EmbeddingMethod`, e.g. MCC), which returns one list wherever the query is.
    """
    from locsens.metrics.tagging import place_name_mask

    is_place = place_name_mask(ds.vocab, ds.place_names).numpy()
    sites = far_apart_sites(ds, 3)
    cand = candidates.rows.numpy()
    rows = cand[: min(n_photos, len(cand))]
    fig = plt.figure(figsize=(12, 6.3 * len(rows)))
    grid = fig.add_gridspec(2 * len(rows), 1, height_ratios=[3.6, 1.1] * len(rows), hspace=0.1)
    fig.subplots_adjust(left=0.02, right=0.98, top=0.97, bottom=0.02)
    for j, r in enumerate(rows):
        ax, below = fig.add_subplot(grid[2 * j]), fig.add_subplot(grid[2 * j + 1])
        truth = set(ds.tags_of(r).tolist())
        here = f"{ds.places['town'][ds.place_index['town'][r]]} (taken here)"
        probes = [(here, float(ds.lat[r]), float(ds.lon[r]))] + sites
        scores = m.tag_scores(np.full(len(probes), r), lat=[p[1] for p in probes], lon=[p[2] for p in probes])
        draw_world(ax)
        fit_latitudes(ax, [p[1] for p in probes])
        below.axis("off")
        for i, ((name, la, lo), s) in enumerate(zip(probes, scores)):
            top = torch.topk(s, k).indices.tolist()
            ax.plot(
                lo,
                la,
                marker="*" if i == 0 else "o",
                ms=15 if i == 0 else 9,
                color="#c62828",
                mec="white",
                zorder=4 - (i > 0),
            )
            ax.annotate(str(i + 1), (lo, la), xytext=(6, 5), textcoords="offset points", fontsize=10, weight="bold")
            lines = [(f"{i + 1}. {name}", {"color": "black", "weight": "bold"})]
            lines += [(ds.vocab[t], _tag_style(t in truth, bool(is_place[t]))) for t in top]
            _text_column(below, i / len(probes), lines)
        true = ", ".join(ds.vocab[t] for t in ds.tags_of(r)[:8])
        ax.set_title(f"photo {ds.photo_id[r]} (true tags: {true}): top-{k} tags of {m.name} at each place", fontsize=10)
    fig.text(0.01, 0.005, "blue: place names; bold green: the photo's true tags", fontsize=8, color="#455a64")
    paths = [_save(fig, fig_dir / "qualitative_tagging.png", tight=False)]

    tag_name = next((t for t in ("beach", "temple", "bridge", "snow") if t in ds.vocab), ds.vocab[0])
    t = ds.vocab.index(tag_name)
    n = len(sites)
    q_tag, q_lat, q_lon = torch.full((n,), t), torch.tensor([p[1] for p in sites]), torch.tensor([p[2] for p in sites])
    panels = [(m.name, m.retrieve(q_tag, q_lat, q_lon, cand, k))]
    if agnostic is not None:
        panels.append(
            (f"{agnostic.name} (the same list for every place)", agnostic.retrieve(q_tag, q_lat, q_lon, cand, k))
        )
    fig, axes = plt.subplots(1, len(panels), figsize=(9.5 * len(panels), 5.4), squeeze=False)
    colours = ["#d81b60", "#1e88e5", "#43a047", "#fb8c00"]
    for p, (ax, (name, ids)) in enumerate(zip(axes[0], panels)):
        draw_world(ax)
        shown = [la for _, la, _ in sites] + [float(ds.lat[cand[i]]) for i in ids.flatten().tolist() if i >= 0]
        fit_latitudes(ax, shown)
        shared = p > 0  # the agnostic list is one list: its photos in one neutral colour
        notes = []
        for j, ((site, la, lo), got) in enumerate(zip(sites, ids.tolist())):
            c = colours[j % len(colours)]
            ax.plot(lo, la, marker="*", ms=16, color=c, mec="black", mew=0.6, zorder=4)
            found = [cand[i] for i in got if i >= 0]
            km = [float(geodesic_km(la, lo, ds.lat[r], ds.lon[r])) for r in found]
            dot = "#546e7a" if shared else c
            for r in found:
                carries = t in ds.tags_of(r)
                link(ax, lo, la, float(ds.lon[r]), float(ds.lat[r]), color=c, lw=0.6, alpha=0.6, zorder=2)
                ax.plot(ds.lon[r], ds.lat[r], "o", ms=7, color=dot if carries else "white", mec=dot, mew=1.5, zorder=3)
            marks = ", ".join(f"{d:.0f}{'' if t in ds.tags_of(r) else chr(0x2717)}" for r, d in zip(found, km))
            notes.append((f"near {site} (km): {marks}", c))
        for j, (text, c) in enumerate(notes):
            ax.text(
                0.01,
                0.02 + 0.06 * j,
                text,
                transform=ax.transAxes,
                fontsize=8,
                color=c,
                va="bottom",
                bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "none", "pad": 1},
            )
        ax.set_title(f"{name}: top-{k} photos for '{tag_name}' near each star", fontsize=10)
    fig.text(
        0.01,
        0.005,
        f"filled: the photo carries '{tag_name}'; hollow (and {chr(0x2717)}): it does not; distances to the query place",
        fontsize=8,
        color="#455a64",
    )
    paths.append(_save(fig, fig_dir / "qualitative_retrieval.png"))
    return paths


def _tag_style(true: bool, place: bool) -> dict:
    return {"color": "#2e7d32" if true else "#1565c0" if place else "#263238", "weight": "bold" if true else "normal"}


def _text_column(ax, x: float, lines: list[tuple[str, dict]]) -> None:
    """Coloured lines stacked top-down at axes fraction ``x`` (one column of a legend-like panel)."""
    from matplotlib.offsetbox import AnchoredOffsetbox, TextArea, VPacker

    box = VPacker(children=[TextArea(text, textprops={"fontsize": 9, **style}) for text, style in lines], pad=0, sep=2)
    ax.add_artist(
        AnchoredOffsetbox("upper left", child=box, bbox_to_anchor=(x, 1.0), bbox_transform=ax.transAxes, frameon=False)
    )


def far_apart_sites(ds, n: int) -> list[tuple[str, float, float]]:
    """The most photographed town of each of the ``n`` most photographed continents (name, lat, lon)."""
    town, cont = ds.place_index["town"], ds.place_index["continent"]
    sites = []
    for c in np.argsort(-np.bincount(cont, minlength=len(ds.places["continent"])), kind="stable")[:n]:
        t = int(np.argmax(np.bincount(town[cont == c], minlength=len(ds.places["town"]))))
        here = town == t
        sites.append((ds.places["town"][t], float(ds.lat[here].mean()), float(ds.lon[here].mean())))
    return sites


def _save(fig, path: Path, tight: bool = True) -> str:
    if tight:
        fig.tight_layout()
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)
    return str(path)
