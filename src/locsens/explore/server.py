"""The explorer's web server: one page and a small read-only JSON API over an :class:`Explorer`.

Starlette (routing, static files) under uvicorn, both the optional ``explorer`` extra. Every route is
GET; the server never writes. Bad input answers a JSON ``{"error": ...}`` with a 4xx status naming
the problem (an unknown query parameter too, with a did-you-mean), which the page shows.
"""

from __future__ import annotations

import asyncio
import difflib
import logging
import socket
import threading
from pathlib import Path

from locsens.explore.session import Explorer, ExplorerError
from locsens.worldmap import outlines_json

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"

# route -> (Explorer method, its query parameters)
API = {
    "info": ("info", ()),
    "world": (None, ()),
    "photo": ("photo", ("photo",)),
    "random": ("random_photo", ("seed",)),
    "search": ("search", ("q",)),
    "vocab": ("vocabulary", ("prefix",)),
    "tags": ("rank_tags", ("photo", "lat", "lon", "k")),
    "retrieve": ("retrieve", ("tag", "lat", "lon", "km", "k")),
    "heatmap": ("heatmap", ("tag", "photo", "step")),
    "compare": ("compare", ()),
}
REQUIRED = {
    "photo": ("photo",),
    "random": ("seed",),
    "search": ("q",),
    "tags": ("photo", "lat", "lon"),
    "retrieve": ("tag", "lat", "lon"),
    "heatmap": ("tag",),
}


def create_app(explorer: Explorer):
    try:
        from starlette.applications import Starlette
        from starlette.concurrency import run_in_threadpool
        from starlette.exceptions import HTTPException
        from starlette.responses import FileResponse, JSONResponse, Response
        from starlette.routing import Mount, Route
        from starlette.staticfiles import StaticFiles
    except ImportError as e:  # pragma: no cover - the extra is installed by make setup
        raise ImportError("the explorer needs its optional extra: pip install -e '.[explorer]'") from e

    lock = asyncio.Lock()  # one question at a time: the scoring engine is not re-entrant
    world = outlines_json()

    def error(message: str, status: int) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    async def api(request):
        name = request.path_params["name"]
        if name not in API:
            return error(f"unknown API route /api/{name}" + _hint(name, API), 404)
        method, params = API[name]
        items = request.query_params.multi_items()
        given = dict(items)
        repeated = sorted({p for p, _ in items if sum(q == p for q, _ in items) > 1})
        if repeated:
            return error(f"/api/{name}: parameter {repeated[0]!r} given more than once", 400)
        unknown = [p for p in given if p not in params]
        if unknown:
            return error(
                f"/api/{name}: unknown parameter {unknown[0]!r}{_hint(unknown[0], params)}; it takes "
                + (", ".join(params) or "no parameters"),
                400,
            )
        missing = [p for p in REQUIRED.get(name, ()) if not given.get(p)]
        if missing:
            return error(f"/api/{name}: missing parameter {missing[0]!r} (it takes {', '.join(params)})", 400)
        if method is None:
            return JSONResponse({"countries": world})
        args = {("photo_id" if p == "photo" else "query" if p == "q" else p): v for p, v in given.items()}
        async with lock:  # one at a time, off the event loop: a heat map does not stall the page's files
            try:
                return JSONResponse(await run_in_threadpool(getattr(explorer, method), **args))
            except ExplorerError as e:
                return error(str(e), e.status)
            except Exception as e:  # a bug, not bad input: say so, keep serving
                log.exception("/api/%s failed", name)
                return error(f"/api/{name} failed: {type(e).__name__}: {e}", 500)

    async def figure(request):
        try:
            return FileResponse(explorer.figure(request.path_params["index"], request.path_params["name"]))
        except ExplorerError as e:
            return error(str(e), e.status)

    async def image(request):
        try:
            return FileResponse(explorer.image(request.path_params["photo"]))
        except ExplorerError as e:
            return error(str(e), e.status)

    async def index(request):
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def no_icon(request):
        return Response(status_code=204)

    async def http_error(request, exc):
        # not-found and method errors as JSON too: the page shows every error's message the same way
        detail = {404: f"no such page {request.url.path}", 405: "the explorer answers GET only (it never writes)"}
        return error(detail.get(exc.status_code, str(exc.detail)), exc.status_code)

    return Starlette(
        exception_handlers={HTTPException: http_error},
        routes=[
            Route("/", index),
            Route("/favicon.ico", no_icon),
            Route("/api/{name}", api),
            Route("/figure/{index}/{name}", figure),
            Route("/image/{photo}", image),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
    )


def _hint(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_port(host: str, port: int) -> None:
    """Refuse a host that does not resolve or a port already taken, naming them."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.bind((host, port))
    except OSError as e:
        raise OSError(
            f"host={host} port={port}: cannot serve there ({e.strerror or e}); choose another port="
        ) from None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class BackgroundServer:
    """uvicorn serving ``app`` from a thread (tests, the screenshot script): ``url``; ``stop()``."""

    def __init__(self, app, host: str = "127.0.0.1", port: int | None = None):
        import uvicorn

        self.port = port or free_port(host)
        self.url = f"http://{host}:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        for _ in range(500):
            if self.server.started:
                break
            if not self.thread.is_alive():
                raise RuntimeError(f"the explorer's server did not start on {self.url}")
            threading.Event().wait(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def serve(explorer: Explorer, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve until interrupted (Ctrl-C)."""
    import uvicorn

    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s: the explorer has no authentication; anyone who reaches it sees the run", host)
    print(f"locsens explorer: {explorer.info()['method']} on http://{host}:{port}/  (Ctrl-C stops it)", flush=True)
    uvicorn.run(create_app(explorer), host=host, port=port, log_level="warning")
