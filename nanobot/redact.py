"""Secrets out of any text a client or a log line may see.

An upstream that quotes the request back ("invalid key in header
Authorization: Bearer sk-...") would otherwise hand the provider key to
whoever made the request. :class:`Redactor` is built once from the config
(every key, token, header value, URL userinfo and webhook path it holds)
and replaces each with ``***``; it is applied where upstream text becomes
an error message, where errors are rendered for a client, to the outbox's
``last_error``, and, through :class:`RedactingFilter`, to every log record.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import quote, unquote, urlsplit

from nanobot.config import ChannelsConfig, Config, ProviderConfig
from nanobot.url_mask import MASK, public_url

# Shorter values are not masked: "abc" would mangle every word containing it.
MIN_SECRET_CHARS = 4
# Text cut to a length ends with this (``shorten``); what precedes it may be
# the start of a secret whose rest was cut off.
CUT_MARK = "..."


class Redactor:
    """Replaces every configured secret (and its percent-encoded form) in a text.

    ``secrets`` maps a secret to what replaces it (``***`` for most; a
    webhook URL keeps its scheme and host). One regular expression, longest
    secret first, makes a call one pass over the text.
    """

    def __init__(self, secrets: dict[str, str] | Iterable[str] = ()) -> None:
        table = dict(secrets) if isinstance(secrets, dict) else dict.fromkeys(secrets, MASK)
        found: dict[str, str] = {}
        for secret, replacement in table.items():
            for variant in (secret, quote(secret, safe="")):
                if len(variant) >= MIN_SECRET_CHARS:
                    found.setdefault(variant, replacement)
        self._table = found
        self._ordered = sorted(found, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, self._ordered))) if found else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def __call__(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        text = self._pattern.sub(lambda m: self._table[m.group(0)], text)
        if text.endswith(CUT_MARK):
            text = self._mask_cut_tail(text)
        return text

    def _mask_cut_tail(self, text: str) -> str:
        """Mask the start of a secret left right before a ``...`` cut."""
        body = text[: -len(CUT_MARK)]
        for secret in self._ordered:
            for size in range(len(secret) - 1, MIN_SECRET_CHARS - 1, -1):
                if body.endswith(secret[:size]):
                    return body[:-size] + MASK + CUT_MARK
        return text

    @classmethod
    def from_config(cls, config: Config) -> Redactor:
        secrets: dict[str, str] = {}
        for provider in config.providers.values():
            secrets.update(provider_secrets(provider))
        secrets.update(channel_secrets(config.channels))
        search = config.tools.web.search
        _add(secrets, config.api.api_key, search.api_key)
        _add_url(secrets, search.api_base)
        for server in config.tools.mcp_servers.values():
            _add_headers(secrets, server.headers)
            _add(secrets, *server.env.values())
            _add_url(secrets, server.url)
        _add_url(secrets, config.database.url)
        return cls(secrets)


def provider_secrets(provider: ProviderConfig) -> dict[str, str]:
    """What one LLM provider sends that must not come back out."""
    secrets: dict[str, str] = {}
    _add(secrets, provider.api_key)
    _add_headers(secrets, provider.extra_headers)
    _add_url(secrets, provider.api_base)
    return secrets


def channel_secrets(channels: ChannelsConfig) -> dict[str, str]:
    """The Telegram token, the webhook's headers, and its URL past the host."""
    secrets: dict[str, str] = {}
    _add(secrets, channels.telegram.token)
    _add_url(secrets, channels.telegram.api_base)
    hook = channels.webhook
    _add_headers(secrets, hook.headers)
    _add_url(secrets, hook.url, whole=True)
    return secrets


def _add(secrets: dict[str, str], *values: str) -> None:
    for value in values:
        if value:
            secrets.setdefault(value, MASK)


def _add_headers(secrets: dict[str, str], headers: dict[str, str]) -> None:
    for value in headers.values():
        _add(secrets, value)
        # "Bearer <token>": the token alone may be quoted back too.
        _add(secrets, value.split()[-1] if value.split() else "")


def _add_url(secrets: dict[str, str], url: str | None, whole: bool = False) -> None:
    """URL userinfo (raw and decoded); with ``whole``, the path and query too."""
    if not url:
        return
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        _add(secrets, url)
        return
    userinfo, at, _ = parts.netloc.rpartition("@")
    if at:
        _add(secrets, userinfo, unquote(userinfo))
        if password:
            _add(secrets, password, unquote(password))
    if whole:
        secrets[url] = public_url(url) + "/" + MASK
        rest = url[len(parts.scheme) + 3 + len(parts.netloc) :] if "://" in url else ""
        if rest.strip("/?#"):
            _add(secrets, rest)


class RedactingFilter(logging.Filter):
    """Redacts a log record's message and traceback before any handler formats it."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self._redact = redact
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._redact:
            return True
        try:
            message = record.getMessage()
        except Exception:  # arguments that do not fit the format: keep both, redacted
            message = f"{record.msg} {record.args!r}"
        record.msg = self._redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self._redact(record.stack_info)
        return True


def install_log_redaction(redact: Redactor) -> None:
    """Put a :class:`RedactingFilter` on every handler of the root logger.

    On the handlers, not a logger: a logger's filters do not see records
    that its children (``tornado.access``, ``httpx``, ``nanobot.*``) pass up.
    """
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter(redact))
