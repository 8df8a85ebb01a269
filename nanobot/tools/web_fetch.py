"""``web_fetch``: one web page as readable text, with its final URL and status.

The HTTP client is Tornado's (the server's own stack, no proxy settings read
from the environment, no connection reuse across hops). It connects through
:class:`GuardedResolver`, which resolves the name itself, checks every
address (:mod:`nanobot.tools.ssrf`) and hands the client only the addresses
that passed: the address checked is the address connected to, while the
``Host`` header and TLS SNI/certificate check keep the URL's name. Redirects
are followed here, at most :data:`MAX_REDIRECTS`, each hop resolved and
checked anew. The body is read up to ``maxBytes`` and the connection dropped
there; the text is made in a worker process (:mod:`nanobot.tools.html_text`).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, urljoin, urlsplit

from tornado.httpclient import HTTPRequest
from tornado.httputil import HTTPHeaders, HTTPInputError
from tornado.iostream import StreamClosedError
from tornado.netutil import DefaultLoopResolver, Resolver
from tornado.simple_httpclient import HTTPStreamClosedError, HTTPTimeoutError, SimpleAsyncHTTPClient

from nanobot.agent.tools import Tool, TurnScope, fail, function_schema
from nanobot.config import Config, WebFetchConfig
from nanobot.errors import UnprocessableFile
from nanobot.files.limits import FileLimits
from nanobot.files.pool import Extractor
from nanobot.tools import html_text
from nanobot.tools.base import BuiltinTool, ToolDeps
from nanobot.tools.ssrf import IPNetwork, SsrfRefused, parse_whitelist, refusal

MAX_REDIRECTS = 5
USER_AGENT = "Mozilla/5.0 (compatible; nanobot web_fetch)"
CONVERT_SECONDS = 15.0  # turning one page into text, in a worker process
_HTML = ("text/html", "application/xhtml+xml")
_TEXT_APPS = (
    "application/json",
    "application/xml",
    "application/javascript",
    "application/ecmascript",
    "application/x-javascript",
    "application/x-yaml",
    "application/yaml",
    "application/toml",
)


class FetchError(Exception):
    """A fetch that ends in an ``Error:`` result; the message says why."""


class _Stop(HTTPInputError):
    """Raised from a callback to drop the connection; Tornado closes it quietly
    for an ``HTTPInputError`` (anything else is logged as uncaught)."""


class GuardedResolver(Resolver):
    """Resolves a name and keeps only the addresses ``web_fetch`` may connect to."""

    def initialize(self, whitelist: list[IPNetwork]) -> None:
        self._inner = DefaultLoopResolver()
        self._whitelist = whitelist

    async def resolve(
        self, host: str, port: int, family: socket.AddressFamily = socket.AF_UNSPEC
    ) -> list[tuple[int, Any]]:
        allowed, refused = [], None
        for fam, sockaddr in await self._inner.resolve(host, port, family):
            why = refusal(sockaddr[0], self._whitelist)
            if why is None:
                allowed.append((fam, sockaddr))
            elif refused is None:
                refused = SsrfRefused(host, sockaddr[0], why)
        if not allowed:
            raise refused or socket.gaierror(socket.EAI_NONAME, "no address")
        return allowed


def is_text(media_type: str) -> bool:
    return (
        media_type.startswith("text/")
        or media_type in _HTML
        or media_type in _TEXT_APPS
        or media_type.endswith(("+json", "+xml"))
    )


@dataclass
class _Hop:
    """One response as it streams in: status, headers, and the body up to the cap."""

    max_bytes: int
    status: int = 0
    reason: str = ""
    headers: HTTPHeaders = field(default_factory=HTTPHeaders)
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    cut: bool = False
    not_text: bool = False
    abandoned: bool = False  # the turn was cancelled: drop the connection at the next event

    def on_header(self, line: str) -> None:
        if self.abandoned:
            raise _Stop()
        if line.startswith("HTTP/"):
            parts = line.split(" ", 2)
            self.status, self.reason = int(parts[1]), parts[2].strip() if len(parts) > 2 else ""
        elif line.strip():
            self.headers.parse_line(line)
        elif not 300 <= self.status < 400 and not is_text(self.media_type) and self.media_type:
            self.not_text = True
            raise _Stop()  # before a byte of the body is read

    def on_chunk(self, chunk: bytes) -> None:
        if self.abandoned:
            raise _Stop()
        room = self.max_bytes - self.size
        if len(chunk) > room:  # keep what fits, then drop the connection
            self.chunks.append(chunk[:room])
            self.size, self.cut = self.max_bytes, True
            raise _Stop()
        self.chunks.append(chunk)
        self.size += len(chunk)

    @property
    def media_type(self) -> str:
        return self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()

    @property
    def charset(self) -> str | None:
        for param in self.headers.get("Content-Type", "").split(";")[1:]:
            key, _, value = param.partition("=")
            if key.strip().lower() == "charset":
                return value.strip().strip('"') or None
        return None


class WebFetchTool(BuiltinTool):
    """The ``web_fetch`` tool: one page, fetched safely, as readable text."""

    name = "web_fetch"
    schema = function_schema(
        name,
        "Fetch a web page (http or https) and return it as readable text, with its final URL "
        "and HTTP status. Scripts, styles and page navigation are left out.",
        {"url": {"type": "string", "description": "The http(s) URL to fetch."}},
        ["url"],
    )

    def __init__(self, config: WebFetchConfig, whitelist: list[IPNetwork], max_chars: int) -> None:
        self._config = config
        self._whitelist = whitelist
        self._pages = Extractor(
            FileLimits(max_chars=max_chars, timeout_seconds=CONVERT_SECONDS, workers=2), target=html_text.convert
        )
        self._client: SimpleAsyncHTTPClient | None = None

    @classmethod
    def enabled(cls, config: Config) -> bool:
        return config.tools.web.fetch.enabled

    @classmethod
    def build(cls, deps: ToolDeps) -> Tool:
        """``ValueError`` for a bad ``tools.ssrfWhitelist`` entry."""
        tools = deps.config.tools
        return cls(tools.web.fetch, parse_whitelist(tools.ssrf_whitelist), tools.max_result_chars)

    async def run(self, args: dict[str, Any], scope: TurnScope) -> str:
        url = args.get("url")
        if not isinstance(url, str) or not url.strip():
            return fail("Error: 'url' must be a non-empty string.")
        try:
            # The hops end themselves at the deadline; the extra second only
            # catches a resolver that hangs past it.
            async with asyncio.timeout(self._config.timeout + 1):
                final, hop = await self._follow(url.strip())
        except TimeoutError:
            return fail(f"Error: fetching {url} took longer than {self._config.timeout:g} s.")
        except FetchError as exc:
            return fail(f"Error: {exc}")
        return await self._render(final, hop)

    async def close(self) -> None:
        if self._client is not None:
            self._client.close()
        await self._pages.close()

    async def _follow(self, url: str) -> tuple[str, _Hop]:
        seen = {url}
        deadline = asyncio.get_running_loop().time() + self._config.timeout
        for redirects in range(MAX_REDIRECTS + 1):
            try:
                hop = await self._get(url, deadline)
            except FetchError as exc:
                if redirects:
                    raise FetchError(f"redirect {redirects} to {url}: {exc}") from None
                raise
            location = hop.headers.get("Location")
            if not (300 <= hop.status < 400 and location):
                return url, hop
            if redirects == MAX_REDIRECTS:
                raise FetchError(f"too many redirects (more than {MAX_REDIRECTS}), last at {url}")
            url = urljoin(url, location.strip())
            if url in seen:
                raise FetchError(f"redirect loop: {url} was already visited")
            seen.add(url)
        raise AssertionError("unreachable")

    async def _get(self, url: str, deadline: float) -> _Hop:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise FetchError(f"only http and https URLs can be fetched, not {url[:200]!r}")
        try:
            _ = parts.port  # urlsplit checks the port only when it is read
        except ValueError:
            raise FetchError(f"the URL {url[:200]!r} has an invalid port") from None
        if not parts.hostname:
            raise FetchError(f"the URL {url[:200]!r} has no host")
        hop = _Hop(self._config.max_bytes)
        # Tornado's own timeouts end a hop before the tool's deadline does,
        # so the request is closed cleanly rather than cancelled under it.
        left = max(deadline - asyncio.get_running_loop().time(), 0.05)
        request = HTTPRequest(
            url,
            follow_redirects=False,
            connect_timeout=left,
            request_timeout=left,
            headers={"User-Agent": USER_AGENT, "Accept": "text/html,text/plain;q=0.9,*/*;q=0.5"},
            header_callback=hop.on_header,
            streaming_callback=hop.on_chunk,
            decompress_response=True,
        )
        try:
            await self._http().fetch(request, raise_error=False)
        except asyncio.CancelledError:
            # Cancelling the await does not stop Tornado's request: the next
            # byte that arrives drops the connection instead of being read.
            hop.abandoned = True
            raise
        except Exception as exc:
            if hop.cut:
                return hop
            raise FetchError(self._explain(exc, hop, url, parts)) from None
        if hop.status == 0:
            raise FetchError(f"no HTTP response from {parts.hostname}")
        return hop

    def _explain(self, exc: Exception, hop: _Hop, url: str, parts: SplitResult) -> str:
        host = parts.hostname
        if hop.not_text:
            return f"{url} is {hop.media_type} (HTTP {hop.status}), not a page web_fetch can read as text"
        if isinstance(exc, SsrfRefused):
            return str(exc)
        if isinstance(exc, socket.gaierror):
            return f"could not resolve host {host!r}: {exc.strerror or exc}"
        if isinstance(exc, HTTPTimeoutError):
            return f"fetching {url} took longer than {self._config.timeout:g} s"
        if isinstance(exc, ConnectionRefusedError):
            port = parts.port or (443 if parts.scheme == "https" else 80)
            return f"connection refused by {host}:{port}"
        if isinstance(exc, ssl.SSLError):
            return f"TLS error with {host}: {exc.reason or exc}"
        if isinstance(exc, (StreamClosedError, HTTPStreamClosedError)):
            return f"{host} closed the connection before the response was complete"
        if isinstance(exc, OSError):
            return f"could not connect to {host}: {exc.strerror or exc}"
        return f"fetching {url} failed: {exc}"

    def _http(self) -> SimpleAsyncHTTPClient:
        if self._client is None:
            self._client = SimpleAsyncHTTPClient(
                force_instance=True,
                max_clients=64,
                resolver=GuardedResolver(whitelist=self._whitelist),
                max_body_size=1 << 50,  # the body is cut by _Hop at maxBytes, not refused
            )
        return self._client

    async def _render(self, url: str, hop: _Hop) -> str:
        body = b"".join(hop.chunks)
        media = hop.media_type
        if not media and b"\0" in body[:4096]:
            return fail(
                f"Error: {url} is binary content without a Content-Type, not a page web_fetch can read as text."
            )
        kind = html_text.kind_for(media or ("text/html" if body.lstrip()[:1] == b"<" else "text/plain"), hop.charset)
        try:
            text = await self._pages.extract(kind, body, url) if body else ""
        except UnprocessableFile as exc:
            return fail(f"Error: {exc.message}")
        except RuntimeError as exc:  # the worker could not start, or the server is closing
            return fail(f"Error: could not turn {url} into text: {exc}")
        head = [f"URL: {url}", f"Status: {hop.status} {hop.reason}".rstrip()]
        if media:
            head.append(f"Content-Type: {media}")
        if hop.cut:
            head.append(f"Note: the body was cut at {self._config.max_bytes} bytes (tools.web.fetch.maxBytes).")
        return "\n".join(head) + "\n\n" + (text or "(no readable text)")
