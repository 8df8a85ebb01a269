"""How one outbound message reaches its platform: Telegram or a webhook.

:class:`ChannelSenders` knows which channels are usable (enabled *and*
configured) and performs one delivery attempt. It never touches the
database: the outbox decides when to try, and stores what went wrong. Every
error it raises is already safe to store and show, with the Telegram token,
the webhook's headers and its URL past the host (all secrets) redacted.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx2
import orjson

from nanobot.config import ChannelsConfig
from nanobot.providers.transport import PooledTransport
from nanobot.redact import CUT_MARK, Redactor, channel_secrets

TELEGRAM_MAX_CHARS = 4096
# Each channel, and the setting without which it cannot deliver even when enabled.
_TARGET_KEYS = {"telegram": "token", "webhook": "url"}
KNOWN_CHANNELS = tuple(_TARGET_KEYS)
_MAX_ERROR_CHARS = 500
# The most of a platform's answer that is read: enough for Telegram's JSON or
# a webhook's error text; a larger body is cut there, never held whole.
_MAX_ANSWER_BYTES = 64 * 1024
# Extra lease time per row on top of the HTTP timeouts, for the database
# writes around a delivery.
_LEASE_MARGIN = 30.0

ProgressCallback = Callable[[int], Awaitable[None]]


class DeliveryError(Exception):
    """One failed delivery attempt; ``str(exc)`` holds no secret."""


@dataclass(frozen=True, slots=True)
class Answer:
    """A platform's HTTP answer: its status and the start of its body."""

    code: int
    body: bytes


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
        self._http: httpx2.AsyncClient | None = None
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
        headers = httpx2.Headers(hook.headers)
        # Configured headers win, so a "...; charset=utf-8" variant is kept.
        if "Content-Type" not in headers:
            headers["Content-Type"] = "application/json"
        body = orjson.dumps({"channel": "webhook", "chat_id": chat_id, "content": content})
        response = await self._post(hook.url, body, headers)
        if not 200 <= response.code < 300:
            raise DeliveryError(self._redact(f"webhook: HTTP {response.code}: {_snippet(response.body)}"))

    async def _post(self, url: str, body: bytes, headers: dict[str, str] | httpx2.Headers) -> Answer:
        """POST and return any HTTP answer; no answer at all is a DeliveryError.

        The request runs in the caller's task on the provider's transport (one
        keep-alive pool, TLS verified), so cancelling the delivery ends it: the
        outbox leaves nothing running when it closes. ``http_timeout`` bounds
        the whole exchange, a slow trickle of an answer included; a redirect
        is an answer, not followed (a redirected POST would be replayed as a GET).
        """
        try:
            async with asyncio.timeout(self._timeout):
                async with self._client().stream("POST", url, content=body, headers=headers) as response:
                    kept = bytearray()
                    async for piece in response.aiter_raw():
                        kept += piece
                        if len(kept) >= _MAX_ANSWER_BYTES:
                            break
                    return Answer(response.status_code, bytes(kept[:_MAX_ANSWER_BYTES]))
        except Exception as exc:  # refused, DNS, TLS, timeout: all "try again later"
            # The exception text may hold the URL, hence the token.
            raise DeliveryError(self._redact(f"{type(exc).__name__}: {exc}".rstrip(": "))) from None

    def _client(self) -> httpx2.AsyncClient:
        # Made on first use so it binds to the loop that runs the deliveries.
        if self._http is None:
            self._http = httpx2.AsyncClient(
                transport=PooledTransport(self._max_clients),
                timeout=self._timeout,
                trust_env=False,
                follow_redirects=False,
                # The answer is read raw and cut at _MAX_ANSWER_BYTES: nothing to decompress.
                headers={"Accept-Encoding": "identity"},
            )
        return self._http

    def _redact(self, text: str) -> str:
        text = self._redact_secrets(text)
        if len(text) > _MAX_ERROR_CHARS:
            text = text[: _MAX_ERROR_CHARS - 3] + "..."
        return text

    async def close(self) -> None:
        """Release the HTTP client and its connections (deliveries were cancelled by their owner)."""
        client, self._http = self._http, None
        if client is not None:
            await client.aclose()


def _telegram_problem(response: Answer) -> str | None:
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
