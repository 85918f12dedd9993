"""Country outlines of the world, offline: the one home of the map behind the explorer and the figures.

The outlines are Natural Earth's 1:110m countries (public domain) as packaged by the npm package
``world-atlas`` 2.0.2 (ISC licence, ``locsens/assets/LICENSE-world-atlas.txt``): a TopoJSON file of
108 KB shipped in ``locsens/assets``. TopoJSON stores each shared border once as a quantised,
delta-encoded arc; :func:`countries` decodes it once into plain rings of (lon, lat) degrees.
Everything is drawn in the equirectangular projection (x = longitude, y = latitude).
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

import numpy as np

ATLAS = "countries-110m.json"


@lru_cache(maxsize=1)
def countries() -> tuple[tuple[str, tuple[np.ndarray, ...]], ...]:
    """``((name, (polygon [n, 2] lon/lat degrees, ...)), ...)``, one entry per country (holes are polygons
    too; longitudes may pass +-180 by the part of a ring beyond the antimeridian: clip to the globe)."""
    topo = json.loads(resources.files("locsens.assets").joinpath(ATLAS).read_text())
    scale, translate = np.asarray(topo["transform"]["scale"]), np.asarray(topo["transform"]["translate"])
    arcs = [np.cumsum(np.asarray(a, dtype=np.float64), axis=0) * scale + translate for a in topo["arcs"]]

    def ring(indices) -> np.ndarray:
        # arc ~i is arc i reversed; consecutive arcs share their end / start point, kept once
        parts = [arcs[i] if i >= 0 else arcs[~i][::-1] for i in indices]
        return np.concatenate([parts[0]] + [p[1:] for p in parts[1:]])

    out = []
    for geometry in topo["objects"]["countries"]["geometries"]:
        polygons = {"Polygon": [geometry.get("arcs", [])], "MultiPolygon": geometry.get("arcs", [])}.get(
            geometry["type"], []
        )
        rings = tuple(piece for polygon in polygons for r in polygon for piece in _on_the_plane(ring(r)))
        if rings:
            out.append((str(geometry.get("properties", {}).get("name", "")), rings))
    return tuple(out)


def _on_the_plane(ring: np.ndarray) -> list[np.ndarray]:
    """A ring as polygons of the equirectangular plane. A ring that crosses the antimeridian (Russia, Fiji)
    jumps by 360 degrees of longitude: unwrapped it is one polygon past +-180, drawn again one turn
    over so that the clipped map shows both halves. A ring around a pole (Antarctica) is closed through it."""
    lon = np.unwrap(ring[:, 0], period=360.0)
    points = np.column_stack([lon, ring[:, 1]])
    if abs(lon[-1] - lon[0]) > 180:  # winds once around the pole
        pole = -90.0 if ring[:, 1].mean() < 0 else 90.0
        points = np.vstack([points, [[lon[-1], pole], [lon[0], pole]]])
    shifted = [points + [turn * 360.0, 0.0] for turn in (-1, 0, 1)]
    return [p for p in shifted if p[:, 0].min() < 180 and p[:, 0].max() > -180]


def outlines_json(decimals: int = 2) -> list[dict]:
    """The outlines as JSON-ready ``[{"name", "rings": [[[lon, lat], ...], ...]}]`` for the explorer's page."""
    return [{"name": name, "rings": [np.round(r, decimals).tolist() for r in rings]} for name, rings in countries()]


def draw_world(ax, land: str = "#e4e4e0", edge: str = "#b8b8b0") -> None:
    """Fill the countries on a matplotlib axes in lon/lat degrees and frame the whole globe."""
    from matplotlib.collections import PolyCollection

    rings = [r for _, rs in countries() for r in rs]
    ax.add_collection(PolyCollection(rings, facecolors=land, edgecolors=edge, linewidths=0.4, zorder=0))
    ax.set_xlim(-180, 180)
    ax.set_ylim(-90, 90)
    ax.set_aspect("equal")
    ax.set_facecolor("#f4f8fb")
    ax.set_xticks([])
    ax.set_yticks([])


def link(ax, lon1: float, lat1: float, lon2: float, lat2: float, **style) -> None:
    """A line between two places the short way round: across the antimeridian (Tokyo to California over the
    Pacific) it leaves one edge of the map and comes back at the other."""
    if abs(lon2 - lon1) <= 180:
        ax.plot([lon1, lon2], [lat1, lat2], **style)
        return
    lon2_unwrapped = lon2 - 360 if lon2 > lon1 else lon2 + 360
    ax.plot([lon1, lon2_unwrapped], [lat1, lat2], **style)
    ax.plot([lon1 + (lon2 - lon2_unwrapped), lon2], [lat1, lat2], **style)


def fit_latitudes(ax, lats, south: float = -60.0, north: float = 85.0) -> None:
    """Show the inhabited latitudes, widened to every place in ``lats`` (no point falls off the map)."""
    lats = np.asarray(lats, dtype=float)
    ax.set_ylim(min(south, lats.min() - 5) if len(lats) else south, max(north, lats.max() + 5) if len(lats) else north)
