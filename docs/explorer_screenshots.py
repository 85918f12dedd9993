"""Regenerate the explorer's screenshots in docs/explorer/ (one per view) from a trained demo run.

    .venv/bin/python docs/explorer_screenshots.py [--run outputs/demo-demo/locsens_raw]
        [--eval outputs/demo-demo/evaluation] [--out docs/explorer]

Serves the explorer on a free port and drives headless Chromium (Playwright, Debian's chromium) through
the four views: a photo tagged where it was taken, a retrieval where the tag's photos cluster, where a tag is used, and the
comparison of the evaluation's methods. Each PNG is written to a temporary name and renamed into place.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np


def pixel(page, selector: str, lat: float, lon: float) -> tuple[float, float]:
    box = page.locator(selector).bounding_box()
    return box["x"] + box["width"] * (lon + 180) / 360, box["y"] + box["height"] * (90 - lat) / 180


def shoot(page, path: Path, **options) -> None:
    """A screenshot, quantised to 256 colours (a third of the bytes for a flat page), renamed into place."""
    from PIL import Image

    tmp = path.with_name(f".{path.stem}.tmp.png")
    page.screenshot(path=tmp, **options)
    with Image.open(tmp) as image:
        image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(tmp, optimize=True)
    os.replace(tmp, path)
    print(path)


def main() -> None:
    from playwright.sync_api import sync_playwright

    from locsens.explore.browser import launch
    from locsens.explore.server import BackgroundServer, create_app
    from locsens.explore.session import Explorer

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="outputs/demo-demo/locsens_raw")
    parser.add_argument("--eval", default="outputs/demo-demo/evaluation")
    parser.add_argument("--out", default="docs/explorer")
    args = parser.parse_args()
    out = Path(args.out)
    explorer = Explorer(args.run, [args.eval] if args.eval else [])  # refuses bad inputs before any write
    out.mkdir(parents=True, exist_ok=True)
    ds = explorer.ds
    # a test photo that carries its town's name: the place names LocSens should bring in where it was taken
    town_name = {i: n.lower().replace(" ", "") for i, n in enumerate(ds.places["town"])}
    photo = next(
        (
            int(ds.photo_id[r])
            for r in explorer.test_rows
            if any(ds.vocab[t] == town_name[ds.place_index["town"][r]] for t in ds.tags_of(r))
            and len(ds.tags_of(r)) >= 4
        ),
        int(ds.photo_id[explorer.test_rows[0]]),
    )
    common = ds.vocab[int(np.argmax(np.where(explorer.is_place, -1, explorer.test_count)))]
    tag = next(
        (
            t
            for t in ("beach", "temple", "snow", "bridge")
            if explorer.test_count[explorer.tag_id.get(t, 0)] >= 10 and t in explorer.tag_id
        ),
        common,
    )
    # the retrieval's place: where the test photos of that tag cluster most (the town with most of them)
    with_tag = explorer.test_rows[ds.rows_with_any(np.arange(ds.num_tags) == explorer.tag_id[tag])[explorer.test_rows]]
    town = np.bincount(ds.place_index["town"][with_tag]).argmax()
    at = with_tag[ds.place_index["town"][with_tag] == town]
    place = float(ds.lat[at].mean()), float(ds.lon[at].mean())
    with BackgroundServer(create_app(explorer)) as server, sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(f"{server.url}/?photo={photo}")
        page.wait_for_selector("body[data-ready=true]", timeout=60000)
        page.wait_for_selector("#locsens-tags[data-state=ready]")
        shoot(page, out / "tag_a_photo.png")
        page.click("button[data-view=retrieve]")
        page.fill("#query-tag", tag)
        page.select_option("#query-km", "750")
        page.mouse.click(*pixel(page, "#ret-map-locsens svg", *place))
        page.wait_for_function("document.querySelectorAll('#ret-map-locsens circle.result').length === 10")
        shoot(page, out / "retrieve.png")
        page.click("button[data-view=heat]")
        page.fill("#heat-tag", tag)
        page.select_option("#heat-mode", "locsens")
        page.click("#heat-go")
        page.wait_for_selector("#heat-image", timeout=60000)
        shoot(page, out / "where_is_a_tag_used.png")
        if args.eval:
            page.click("button[data-view=compare]")
            page.wait_for_selector("table.compare")
            page.wait_for_function("[...document.querySelectorAll('.figures img')].every(i => i.complete)")
            shoot(page, out / "compare_runs.png")
        browser.close()


if __name__ == "__main__":
    main()
