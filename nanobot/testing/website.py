"""A small real website for the web tools' tests and bench: Tornado on 127.0.0.1, in its own thread.

Routes give the cases web_fetch must handle: pages, plain text, JSON, an
image, gzip, redirects (chains, loops, to any URL), a slow answer, a body
that never ends, and a page without a Content-Type.
"""

from __future__ import annotations

import asyncio
import gzip
import threading
from typing import Any

import tornado.web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from nanobot.testing.html_pages import article, big

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64


class _Page(tornado.web.RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.write(article().html)


class _Big(tornado.web.RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.write(self.settings["big"])


class _Text(tornado.web.RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "text/plain; charset=latin-1")
        self.write("caf\xe9 au lait\n".encode("latin-1"))


class _Json(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write({"answer": 42})


class _Image(tornado.web.RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "image/png")
        self.write(PNG)


class _Binary(tornado.web.RequestHandler):
    def get(self) -> None:
        self.clear_header("Content-Type")
        self.write(PNG)


class _Gzip(tornado.web.RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "text/plain")
        self.set_header("Content-Encoding", "gzip")
        self.write(gzip.compress(b"zipped words " * 1000))


class _NoType(tornado.web.RequestHandler):
    def get(self) -> None:
        self.clear_header("Content-Type")
        self.write(self.get_argument("body", "<p>untyped page</p>"))


class _Redirect(tornado.web.RequestHandler):
    def get(self) -> None:
        self.redirect(self.get_argument("to"), status=int(self.get_argument("status", "302")))


class _Chain(tornado.web.RequestHandler):
    def get(self, n: str) -> None:
        left = int(n)
        self.redirect(f"/chain/{left - 1}" if left > 0 else "/page")


class _Loop(tornado.web.RequestHandler):
    def get(self, which: str) -> None:
        self.redirect("/loop/b" if which == "a" else "/loop/a")


class _Status(tornado.web.RequestHandler):
    def get(self, code: str) -> None:
        self.set_status(int(code))
        self.set_header("Content-Type", "text/html")
        self.write(f"<html><body><h1>Status {code}</h1><p>Nothing here, sorry.</p></body></html>")


class _Slow(tornado.web.RequestHandler):
    async def get(self) -> None:
        await asyncio.sleep(float(self.get_argument("s", "30")))
        self.write("late")


class _Endless(tornado.web.RequestHandler):
    async def get(self) -> None:
        self.set_header("Content-Type", "text/plain")
        chunk = b"x" * 65536
        try:
            for _ in range(100_000):  # ~6.5 GB: web_fetch must stop long before
                self.write(chunk)
                await self.flush()
                self.application.settings["sent"][0] += len(chunk)
        except tornado.iostream.StreamClosedError:
            pass


class _FakeSearch(tornado.web.RequestHandler):
    """Brave's and SearXNG's JSON search answers; some queries make them misbehave."""

    async def get(self, provider: str) -> None:
        self.application.settings["searches"].append((provider, dict(self.request.query_arguments)))
        if provider == "brave" and self.request.headers.get("X-Subscription-Token") != "brave-key":
            self.set_status(401)
            return self.write({"type": "ErrorResponse", "error": {"detail": "bad token"}})
        if provider == "searxng" and self.get_argument("format", "") != "json":
            self.set_status(403)
            return self.write("json format is not enabled")
        query = self.get_argument("q")
        if query == "slow":
            await asyncio.sleep(10)
        if query == "garbage":
            return self.write("<html>not json</html>")
        if query == "shape":
            return self.write({"web": {"results": "nope"}, "results": {"a": 1}})
        if query == "nothing":
            return self.write({"type": "search"} if provider == "brave" else {"results": []})
        hits = [
            {
                "title": f"<strong>{query}</strong> hit {i} &amp; more",
                "url": f"https://example.org/{i}",
                ("description" if provider == "brave" else "content"): f"About <b>{query}</b>, part {i}.",
            }
            for i in range(1, 21)
        ]
        self.write({"type": "search", "web": {"results": hits}} if provider == "brave" else {"results": hits})


class Site:
    """Serve the routes on 127.0.0.1:<free port> until :meth:`stop`."""

    def __init__(self, big_bytes: int = 2 * 1024 * 1024) -> None:
        self.sent = [0]
        self.searches: list[tuple[str, dict[str, list[bytes]]]] = []
        self.app = tornado.web.Application(
            [
                (r"/page", _Page),
                (r"/big", _Big),
                (r"/text", _Text),
                (r"/json", _Json),
                (r"/image", _Image),
                (r"/binary", _Binary),
                (r"/gzip", _Gzip),
                (r"/notype", _NoType),
                (r"/redirect", _Redirect),
                (r"/chain/(\d+)", _Chain),
                (r"/loop/(a|b)", _Loop),
                (r"/(brave|searxng)/search", _FakeSearch),
                (r"/status/(\d+)", _Status),
                (r"/slow", _Slow),
                (r"/endless", _Endless),
            ],
            big=big(big_bytes).html,
            sent=self.sent,
            searches=self.searches,
        )
        self._sockets = bind_sockets(0, "127.0.0.1")
        self.port = self._sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stopped = asyncio.Event()
            server = HTTPServer(self.app)
            server.add_sockets(self._sockets)
            self._ready.set()
            await self._stopped.wait()
            server.stop()
            await server.close_all_connections()

        asyncio.run(main())

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(10)

    def __enter__(self) -> Site:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
