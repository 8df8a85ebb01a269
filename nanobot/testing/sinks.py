"""Fake outbound channels (Telegram Bot API, webhooks) and their admin routes.

The agent server's outbound queue delivers here in end-to-end tests. Every
delivery attempt is recorded in `state.received` (`GET /_received`), and
`POST /_fail` makes chosen paths fail for a while to exercise retries.
"""

from __future__ import annotations

from typing import Any

import orjson

from nanobot.testing.base import JsonHandler

TELEGRAM_MAX_TEXT = 4096
_OK = b'{"ok":true}'


class SinkHandler(JsonHandler):
    """Records each POST, then answers it unless a failure is injected."""

    def post(self, *_: str) -> None:
        injected = self.state.failures.take(self.request.path)
        body = self.read_json()
        if injected is not None:
            self._record(body, failed=True)
            self.send_json(self.failure_body(injected, "injected failure"), injected)
            return
        problem = self.validate(body)
        self._record(body, failed=problem is not None)
        if problem is not None:
            self.send_json(self.failure_body(400, problem), 400)
        else:
            self.send_json(self.success_body())

    def validate(self, body: Any) -> str | None:
        """Why the body is refused, or None to accept it."""
        return None if body is not None else "body is not JSON"

    def success_body(self) -> bytes:
        return _OK

    def failure_body(self, status: int, message: str) -> bytes:
        return orjson.dumps({"ok": False, "error": message})

    def _record(self, body: Any, failed: bool) -> None:
        if body is None:
            body = self.request.body.decode("utf-8", "replace")
        record: dict[str, Any] = {
            "path": self.request.path,
            "body": body,
            "headers": dict(self.request.headers),
        }
        if failed:
            record["failed"] = True
        self.state.received.append(record)


class WebhookSinkHandler(SinkHandler):
    """`POST /hook/<name>`: any JSON body is accepted."""


class TelegramSinkHandler(SinkHandler):
    """`POST /bot<TOKEN>/sendMessage`, answering like the Bot API does."""

    def validate(self, body: Any) -> str | None:
        if not isinstance(body, dict):
            return "Bad Request: body is not a JSON object"
        if body.get("chat_id") in (None, ""):
            return "Bad Request: chat_id is empty"
        text = body.get("text")
        if not isinstance(text, str) or not text:
            return "Bad Request: message text is empty"
        if len(text) > TELEGRAM_MAX_TEXT:
            return "Bad Request: message is too long"
        return None

    def success_body(self) -> bytes:
        message_id = next(self.state.ids)
        return orjson.dumps({"ok": True, "result": {"message_id": message_id}})

    def failure_body(self, status: int, message: str) -> bytes:
        return orjson.dumps({"ok": False, "error_code": status, "description": message})


class ReceivedHandler(JsonHandler):
    """`GET /_received` lists sink deliveries; `DELETE` forgets them."""

    def get(self) -> None:
        self.send_json(orjson.dumps(list(self.state.received)))

    def delete(self) -> None:
        self.state.received.clear()
        self.send_json(_OK)


class FailHandler(JsonHandler):
    """`POST /_fail {"path_prefix","count","status"}` adds a failure rule.

    `DELETE /_fail` drops all rules, so a test can leave no unconsumed
    failures behind for the next one.
    """

    def post(self) -> None:
        body = self.read_json()
        if not isinstance(body, dict):
            self.send_error_json(400, "body must be a JSON object")
            return
        prefix, count, status = body.get("path_prefix"), body.get("count", 1), body.get("status", 500)
        if not isinstance(prefix, str) or not prefix.startswith("/"):
            self.send_error_json(400, "path_prefix must be a string starting with '/'")
        elif not isinstance(count, int) or count < 0:
            self.send_error_json(400, "count must be a non-negative integer")
        elif not isinstance(status, int) or not 400 <= status <= 599:
            self.send_error_json(400, "status must be an integer from 400 to 599")
        else:
            self.state.failures.add(prefix, count, status)
            self.send_json(_OK)

    def delete(self) -> None:
        self.state.failures.clear()
        self.send_json(_OK)
