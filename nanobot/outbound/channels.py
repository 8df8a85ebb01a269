"""How one outbound message reaches its platform: Telegram or a webhook.

:class:`ChannelSenders` knows which channels are usable (enabled *and*
configured) and performs one delivery attempt. It never touches the
database: the outbox decides when to try, and stores what went wrong. Every
error it raises is already safe to store and show, with the Telegram token,
the webhook's headers and its URL past the host (all secrets) redacted.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

import orjson
from tornado.httpclient import HTTPRequest, HTTPResponse
from tornado.httputil import HTTPHeaders

from nanobot.config import ChannelsConfig
from nanobot.outbound.httpclient import AbortableHTTPClient
from nanobot.redact import CUT_MARK, Redactor, channel_secrets

TELEGRAM_MAX_CHARS = 4096
# Each channel, and the setting without which it cannot deliver even when enabled.
_TARGET_KEYS = {"telegram": "token", "webhook": "url"}
KNOWN_CHANNELS = tuple(_TARGET_KEYS)
_MAX_ERROR_CHARS = 500
# Extra lease time per row on top of the HTTP timeouts, for the database
# writes around a delivery.
_LEASE_MARGIN = 30.0

ProgressCallback = Callable[[int], Awaitable[None]]


class DeliveryError(Exception):
    """One failed delivery attempt; ``str(exc)`` holds no secret."""


def split_text(text: str, limit: int = TELEGRAM_MAX_CHARS) -> list[str]:
    """``text`` in consecutive pieces of at most ``limit`` characters.

    An empty text is one empty piece, so the platform (not us) decides
    whether it is acceptable and the row records its answer.
    """
    if not text:
        return [text]
    return [text[i : i + limit] for i in range(0, len(text), limit)]


class ChannelSenders:
    """Per-channel delivery over one HTTP client owned by this object."""

    def __init__(self, config: ChannelsConfig, *, http_timeout: float, max_clients: int) -> None:
        self._config = config
        self._timeout = http_timeout
        self._max_clients = max_clients
        self._http: AbortableHTTPClient | None = None
        self._redact_secrets = Redactor(channel_secrets(config))

    # --- which channels work ------------------------------------------------

    def disabled_reason(self, channel: str) -> str | None:
        """None when ``channel`` can deliver, else why not (for ``last_error``)."""
        head = f"channel {channel!r} is not enabled"
        target = _TARGET_KEYS.get(channel)
        if target is None:
            return f"{head} (unknown channel; known: {', '.join(KNOWN_CHANNELS)})"
        section = getattr(self._config, channel)
        if not section.enabled:
            return f"{head} (channels.{channel}.enabled is false)"
        if not getattr(section, target):
            return f"{head} (channels.{channel}.{target} is empty)"
        return None

    def is_enabled(self, channel: str) -> bool:
        return self.disabled_reason(channel) is None

    def enabled_channels(self) -> tuple[str, ...]:
        return tuple(c for c in KNOWN_CHANNELS if self.is_enabled(c))

    def max_duration(self, channel: str, content: str) -> float:
        """An upper bound on one :meth:`send` of ``content``, in seconds.

        The outbox leases a row for this long, so another process sharing
        the file never sends the same row at the same time.
        """
        requests = max(1, math.ceil(len(content) / TELEGRAM_MAX_CHARS)) if channel == "telegram" else 1
        return requests * self._timeout + _LEASE_MARGIN

    # --- delivery -----------------------------------------------------------

    async def send(
        self, channel: str, chat_id: str, content: str, progress: int, on_progress: ProgressCallback
    ) -> None:
        """Deliver ``content`` or raise :class:`DeliveryError`.

        ``progress`` counts the pieces an earlier attempt already delivered;
        those are skipped, and ``on_progress(n)`` is awaited after each piece
        that leaves more to send, so a retry never repeats a piece.
        """
        reason = self.disabled_reason(channel)
        if reason is not None:
            raise DeliveryError(reason)
        if channel == "telegram":
            await self._send_telegram(chat_id, content, progress, on_progress)
        else:
            await self._send_webhook(chat_id, content)

    async def _send_telegram(self, chat_id: str, content: str, progress: int, on_progress: ProgressCallback) -> None:
        tg = self._config.telegram
        url = f"{tg.api_base.rstrip('/')}/bot{tg.token}/sendMessage"
        headers = {"Content-Type": "application/json"}
        pieces = split_text(content)
        for index in range(progress, len(pieces)):
            # chat_id goes out exactly as given: "-100123" and "@name" are
            # both valid, and a numeric-looking string must stay a string.
            body = orjson.dumps({"chat_id": chat_id, "text": pieces[index]})
            response = await self._post(url, body, headers)
            problem = _telegram_problem(response)
            if problem is not None:
                where = f"piece {index + 1}/{len(pieces)}: " if len(pieces) > 1 else ""
                raise DeliveryError(self._redact(f"telegram: {where}{problem}"))
            if index + 1 < len(pieces):
                await on_progress(index + 1)

    async def _send_webhook(self, chat_id: str, content: str) -> None:
        hook = self._config.webhook
        headers = HTTPHeaders()
        for name, value in hook.headers.items():
            headers[name] = value
        # Configured headers win, so a "...; charset=utf-8" variant is kept.
        if "Content-Type" not in headers:
            headers["Content-Type"] = "application/json"
        body = orjson.dumps({"channel": "webhook", "chat_id": chat_id, "content": content})
        response = await self._post(hook.url, body, headers)
        if not 200 <= response.code < 300:
            raise DeliveryError(self._redact(f"webhook: HTTP {response.code}: {_snippet(response.body)}"))

    async def _post(self, url: str, body: bytes, headers: dict[str, str] | HTTPHeaders) -> HTTPResponse:
        """POST and return any HTTP answer; no answer at all is a DeliveryError."""
        request = HTTPRequest(
            url,
            method="POST",
            body=body,
            headers=headers,
            connect_timeout=self._timeout,
            request_timeout=self._timeout,
            # A redirected POST would be replayed as a GET: treat it as a failure.
            follow_redirects=False,
        )
        try:
            return await self._client().fetch(request, raise_error=False)
        except Exception as exc:  # refused, DNS, TLS, timeout: all "try again later"
            # The exception text may hold the URL, hence the token.
            raise DeliveryError(self._redact(f"{type(exc).__name__}: {exc}")) from None

    def _client(self) -> AbortableHTTPClient:
        # Made on first use so it binds to the loop that runs the deliveries.
        if self._http is None:
            self._http = AbortableHTTPClient(force_instance=True, max_clients=self._max_clients)
        return self._http

    def _redact(self, text: str) -> str:
        text = self._redact_secrets(text)
        if len(text) > _MAX_ERROR_CHARS:
            text = text[: _MAX_ERROR_CHARS - 3] + "..."
        return text

    async def close(self) -> None:
        """End in-flight requests and release the HTTP client."""
        client, self._http = self._http, None
        if client is not None:
            await client.abort()
            client.close()


def _telegram_problem(response: HTTPResponse) -> str | None:
    """None when Telegram accepted the message, else a short description."""
    try:
        data = orjson.loads(response.body or b"")
    except orjson.JSONDecodeError:
        data = None
    if 200 <= response.code < 300 and isinstance(data, dict) and data.get("ok") is True:
        return None
    description = data.get("description") if isinstance(data, dict) else None
    return f"HTTP {response.code}: {description or _snippet(response.body)}"


def _snippet(body: bytes | None) -> str:
    text = (body or b"").decode("utf-8", "replace").strip()
    # A cut text ends with CUT_MARK, so the redactor also masks a secret cut in two.
    return (text[:200] + CUT_MARK if len(text) > 200 else text) or "(empty body)"
