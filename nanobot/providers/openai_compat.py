"""Any OpenAI-compatible endpoint, through the official ``openai`` SDK.

The SDK owns configuration, auth headers, retries and status errors. The
streamed body is read as raw SSE lines and parsed here with orjson: building
a pydantic object per chunk would cost several times the rest of the
per-token path.
"""

from __future__ import annotations

from typing import Any, AsyncIterator

import aiohttp
import httpx2
import openai
import orjson

from nanobot.config import AgentDefaults, ProviderConfig
from nanobot.errors import UpstreamError
from nanobot.protocol import Usage
from nanobot.providers.base import Completion, ToolCall


_JSON_OPTIONS: Any = {"headers": {"Content-Type": "application/json"}}


class OpenAICompatProvider:
    def __init__(self, name: str, config: ProviderConfig, defaults: AgentDefaults, pool_size: int = 1000) -> None:
        self.name = name
        self.model = defaults.model
        self._temperature = defaults.temperature
        self._max_tokens = defaults.max_tokens
        # The SDK's aiohttp transport (C HTTP parser) costs about a third less
        # CPU per call than its default httpx stack; the pool is sized for as
        # many turns as the server lets run at once, all kept alive.
        limits = httpx2.Limits(max_connections=pool_size, max_keepalive_connections=pool_size)
        self._client = openai.AsyncOpenAI(
            api_key=config.api_key or "none",
            base_url=config.api_base or None,
            default_headers=config.extra_headers or None,
            timeout=config.timeout,
            max_retries=config.max_retries,
            http_client=openai.DefaultAioHttpClient(timeout=config.timeout, limits=limits),
        )

    def _fail(self, what: str, kind: str) -> UpstreamError:
        return UpstreamError(f"provider '{self.name}' {what}", code=f"upstream_{kind}")

    async def stream(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
    ) -> AsyncIterator[str | Completion]:
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": self._temperature,
            "max_tokens": self._max_tokens,
        }
        if tools:
            payload["tools"] = tools
        parser = _StreamParser()
        try:
            # The SDK's generic ``post`` keeps its auth, retries and status
            # errors but skips the per-call TypedDict transform of ``create``,
            # which costs more than the rest of the call on small requests;
            # the body is encoded once here with orjson instead of stdlib json.
            response = await self._client.post(
                "/chat/completions",
                cast_to=httpx2.Response,
                content=orjson.dumps(payload),
                options=_JSON_OPTIONS,
                stream=True,
            )
            try:
                # Read to the end (not just to [DONE]) so the connection goes
                # back to the keep-alive pool instead of being closed.
                async for line in response.aiter_lines():
                    text = parser.feed(line)
                    if text:
                        yield text
            finally:
                await response.aclose()
        except openai.APIStatusError as exc:
            raise self._fail(f"answered HTTP {exc.status_code}: {_short(exc.message)}", "status") from None
        except openai.APIConnectionError as exc:
            refused = _refused(exc)
            if isinstance(exc, openai.APITimeoutError) and refused is None:
                raise self._fail("timed out", "timeout") from None
            raise self._fail(f"is unreachable: {_short(str(refused or exc.__cause__ or exc))}", "unreachable") from None
        except _Malformed as exc:
            raise self._fail(f"sent a malformed answer: {exc}", "malformed") from None
        except UpstreamError:
            raise
        except Exception as exc:  # a body cut mid-stream surfaces as a transport error
            raise self._fail(f"failed mid-answer: {_short(type(exc).__name__ + ': ' + str(exc))}", "broken_stream") from None
        if not parser.seen_any:
            raise self._fail("sent an empty answer", "malformed")
        yield parser.completion()

    async def close(self) -> None:
        await self._client.close()


def _refused(exc: BaseException) -> BaseException | None:
    """The connection failure under ``exc``, if that is what it is.

    The aiohttp transport reports a refused connection as a connect *timeout*;
    the cause chain tells the two apart, so users are not sent chasing a slow
    server that is simply not running.
    """
    seen = 0
    cause: BaseException | None = exc
    while cause is not None and seen < 10:
        if isinstance(cause, (ConnectionError, aiohttp.ClientConnectorError)) and not isinstance(
            cause, aiohttp.ServerTimeoutError
        ):
            return cause
        cause = cause.__cause__ or cause.__context__
        seen += 1
    return None


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


class _Malformed(Exception):
    pass


class _StreamParser:
    """Assembles text, tool-call fragments and usage from chunk lines."""

    __slots__ = ("parts", "calls", "usage", "finish_reason", "done", "seen_any")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.calls: dict[int, list[str]] = {}  # index -> [id, name, arguments...]
        self.usage = Usage()
        self.finish_reason = "stop"
        self.done = False
        self.seen_any = False

    def feed(self, line: str) -> str | None:
        if not line.startswith("data:"):
            return None  # comments, event names, blank separators
        data = line[5:].strip()
        if data == "[DONE]":
            self.done = True
            return None
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise _Malformed("a stream chunk is not JSON") from None
        if not isinstance(chunk, dict):
            raise _Malformed("a stream chunk is not an object")
        if "error" in chunk:
            err = chunk["error"]
            msg = err.get("message") if isinstance(err, dict) else err
            raise _Malformed(f"error in stream: {_short(str(msg))}")
        self.seen_any = True
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
        choices = chunk.get("choices")
        if not choices:
            return None
        try:
            choice = choices[0]
            delta = choice.get("delta") or {}
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
            for tc in delta.get("tool_calls") or ():
                self._add_call(tc)
            text = delta.get("content")
        except (AttributeError, TypeError, IndexError):
            raise _Malformed("a stream chunk has an unexpected shape") from None
        if text:
            self.parts.append(text)
            return text
        return None

    def _add_call(self, tc: dict[str, Any]) -> None:
        index = tc.get("index", len(self.calls))
        entry = self.calls.get(index)
        if entry is None:
            entry = self.calls[index] = ["", "", ""]
        fn = tc.get("function") or {}
        if tc.get("id"):
            entry[0] = tc["id"]
        if fn.get("name"):
            entry[1] += fn["name"]
        if fn.get("arguments"):
            entry[2] += fn["arguments"]

    def completion(self) -> Completion:
        calls = [
            ToolCall(id=e[0] or f"call_{i}", name=e[1], arguments=e[2] or "{}")
            for i, e in sorted(self.calls.items())
        ]
        return Completion("".join(self.parts), calls, self.usage, self.finish_reason)
