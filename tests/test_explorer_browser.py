"""The explorer's page in a real headless Chromium (Playwright for Python driving Debian's chromium): drag
the marker across continents and compare the page's ranking with the API's exact one, retrieve near a
place, show an error, draw a heat map, sort the comparison; screenshots land in the test's temp folder."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np
import pytest

sync_api = pytest.importorskip("playwright.sync_api", reason="needs Playwright for Python (the dev extra)")

from locsens.data.store import DatasetStore  # noqa: E402
from locsens.explore.browser import chromium_executable, launch  # noqa: E402

if chromium_executable() is None:
    pytest.skip("no Chromium on this machine (apt-get install chromium)", allow_module_level=True)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PARIS, TOKYO = (48.86, 2.35), (35.68, 139.69)


@pytest.fixture(scope="module")
def page(explored):
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1400, "height": 950})
        page.errors = []
        page.on("pageerror", lambda e: page.errors.append(str(e)))
        yield page
        browser.close()


def api(explored, route: str) -> dict:
    try:
        with urllib.request.urlopen(f"{explored['url']}/api/{route}", timeout=30) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        return json.loads(e.read())


def pixel(page, selector: str, lat: float, lon: float) -> tuple[float, float]:
    """Screen position of (lat, lon) on a map: the SVG shows the whole globe, equirectangular, 2:1."""
    box = page.locator(selector).bounding_box()
    return box["x"] + box["width"] * (lon + 180) / 360, box["y"] + box["height"] * (90 - lat) / 180


def ranked(page, list_id: str) -> tuple[list[str], str, str]:
    ol = page.locator(f"#{list_id}")
    return (
        ol.locator("li").evaluate_all("els => els.map(e => e.dataset.tag)"),
        ol.get_attribute("data-lat"),
        ol.get_attribute("data-lon"),
    )


def open_view(page, url: str, view: str) -> None:
    page.goto(url)
    page.wait_for_selector("body[data-ready=true]", timeout=30000)
    page.click(f"button[data-view={view}]")


def wait_ranked_at(page, lat: float, lon: float) -> None:
    page.wait_for_function(
        "([lat, lon]) => { const ol = document.getElementById('locsens-tags');"
        " return ol.dataset.state === 'ready' && Math.abs(ol.dataset.lat - lat) < 1.5 && Math.abs(ol.dataset.lon - lon) < 1.5; }",
        arg=[lat, lon],
        timeout=20000,
    )


def test_drag_the_marker_across_continents(explored, page, tmp_path):
    ds = DatasetStore(explored["dataset"])
    row = int(ds.split_rows("test")[0])
    pid = int(ds.photo_id[row])
    page.goto(f"{explored['url']}/?photo={pid}")
    page.wait_for_selector("body[data-ready=true]", timeout=30000)
    assert str(pid) in page.inner_text("#photo-info")
    x, y = pixel(page, "#tag-map svg", *PARIS)
    page.mouse.click(x, y)  # the marker jumps to Paris
    wait_ranked_at(page, *PARIS)
    at_paris, lat, lon = ranked(page, "locsens-tags")
    page.screenshot(path=tmp_path / "tag_paris.png")
    x2, y2 = pixel(page, "#tag-map svg", *TOKYO)
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x2, y2, steps=12)  # a drag: moves on the way are scored too, the last one wins
    page.mouse.up()
    wait_ranked_at(page, *TOKYO)
    at_tokyo, lat, lon = ranked(page, "locsens-tags")
    page.screenshot(path=tmp_path / "tag_tokyo.png")
    assert float(page.locator("#marker").get_attribute("data-lon")) == pytest.approx(TOKYO[1], abs=1.5)
    assert len(at_tokyo) == 20 and at_tokyo != at_paris
    want = api(explored, f"tags?photo={pid}&lat={lat}&lon={lon}&k=20")
    assert at_tokyo == [t["tag"] for t in want["locsens"]]
    agnostic, _, _ = ranked(page, "agnostic-tags")
    assert agnostic == [t["tag"] for t in want["agnostic"]]
    # place names and the photo's true tags are marked as the API says
    classes = page.locator("#locsens-tags li").evaluate_all("els => els.map(e => e.className)")
    assert ["place" in c for c in classes] == [t["place"] for t in want["locsens"]]
    assert ["true" in c for c in classes] == [t["true"] for t in want["locsens"]]
    assert not page.errors


def test_retrieve_shows_ten_images_for_each_method(explored, page, tmp_path):
    open_view(page, explored["url"], "retrieve")
    page.fill("#query-tag", "paris")
    page.select_option("#query-km", "750")
    x, y = pixel(page, "#ret-map-locsens svg", *PARIS)
    page.mouse.click(x, y)
    page.wait_for_function("document.querySelectorAll('#ret-map-locsens circle.result').length === 10", timeout=20000)
    page.screenshot(path=tmp_path / "retrieve.png")
    for key in ("locsens", "agnostic"):
        assert page.locator(f"#ret-map-{key} circle.result").count() == 10
    shown = page.locator("#ret-map-locsens circle.result").evaluate_all("els => els.map(e => Number(e.dataset.photo))")
    text = page.inner_text("#query-place")
    lat, lon = (float(v) for v in text.split(":")[1].split(","))
    want = api(explored, f"retrieve?tag=paris&lat={lat:.3f}&lon={lon:.3f}&km=750&k=10")
    assert shown == [r["photo_id"] for r in want["locsens"]["results"]]
    assert f"{want['locsens']['precision']:.1f}" in page.inner_text("#ret-title-locsens")
    assert not page.errors


def test_an_unknown_photo_shows_the_apis_error(explored, page, tmp_path):
    page.goto(f"{explored['url']}/?photo=123")
    page.wait_for_selector("#error:not([hidden])", timeout=20000)
    assert "unknown photo id 123" in page.inner_text("#error")
    page.fill("#photo-search", "nosuchtagatall")
    page.click("#photo-search-go")
    page.wait_for_function("document.getElementById('error').textContent.includes('nosuchtagatall')")
    page.screenshot(path=tmp_path / "error.png")


def test_heat_map_and_sortable_comparison(explored, page, tmp_path):
    open_view(page, explored["url"], "heat")
    page.fill("#heat-tag", "kyoto")
    page.select_option("#heat-mode", "prior")
    page.click("#heat-go")
    page.wait_for_selector("#heat-image", timeout=20000)
    assert "kyoto" in page.inner_text("#heat-source")
    page.screenshot(path=tmp_path / "heat.png")
    page.click("button[data-view=compare]")
    page.wait_for_selector("table.compare", timeout=20000)
    results = json.loads((explored["evaluation"] / "results.json").read_text())
    names = page.locator("table.compare tbody tr td:first-child").all_inner_texts()
    assert set(results["tagging"]) <= set(names)
    column = page.locator("table.compare th", has_text="A@10").first
    column.click()  # sorted by A@10, best first
    index = int(column.get_attribute("data-column"))
    values = page.locator(f"table.compare tbody tr td:nth-child({index + 1})").all_inner_texts()
    numbers = [float(v) if v != "-" else -np.inf for v in values]
    assert numbers == sorted(numbers, reverse=True)
    assert page.locator(".figures img").count() == len(results["figures"])
    page.screenshot(path=tmp_path / "compare.png", full_page=True)
    assert not page.errors
