"""The built-in chat page: ``GET /`` and its files under ``/static/``.

Public on purpose (it holds no data; the page asks for the key when the API
needs one), served with a strict Content-Security-Policy: no inline script,
nothing from any other origin.
"""

from __future__ import annotations

from typing import Any

from tornado import web

from nanobot.errors import ApiError, NotFound
from nanobot.server.admission import Admission, Phase
from nanobot.server.handlers import BaseHandler, request_id_header
from nanobot.server.render import render_error
from nanobot.server.state import RoutePolicy, app_state
from nanobot.server.static_files import STATIC_DIR
from nanobot.server.tornado_private import reason

CSP = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


def _security_headers(handler: web.RequestHandler) -> None:
    handler.set_header("Content-Security-Policy", CSP)
    handler.set_header("X-Content-Type-Options", "nosniff")
    handler.set_header("Referrer-Policy", "no-referrer")


class ChatPageHandler(BaseHandler):
    route = "/"

    def get(self) -> None:
        _security_headers(self)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.finish((STATIC_DIR / "index.html").read_bytes())


class PageAssetHandler(web.StaticFileHandler):
    """The page's CSS and JavaScript; a missing file is the usual JSON 404."""

    def initialize(self, path: str, policy: RoutePolicy) -> None:  # type: ignore[override]
        super().initialize(path)
        self.policy = policy

    def set_default_headers(self) -> None:
        self.clear_header("Server")
        request_id_header(self)

    def prepare(self) -> None:
        # The same guards as every route, under its (public) policy.
        try:
            Admission.start(self, self.policy, app_state(self)).run(Phase.HEAD)
        except ApiError as err:
            render_error(self, err)

    async def get(self, path: str, include_body: bool = True) -> None:
        # A NUL makes every filesystem call raise (a 500 with a traceback):
        # no file has one in its name, so it is simply not found.
        if "\x00" in path:
            raise web.HTTPError(404)
        await super().get(path, include_body)

    def set_extra_headers(self, path: str) -> None:
        _security_headers(self)
        self.set_header("Cache-Control", "no-cache")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if status_code == 405:
            self.set_header("Allow", "GET, HEAD")
        if status_code == 404:
            render_error(self, NotFound(f"Unknown route {self.request.path}.", code="unknown_route"))
        else:
            render_error(self, ApiError(reason(self), status=status_code))
