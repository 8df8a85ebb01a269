"""Any OpenAI-compatible endpoint, through the official ``openai`` SDK.

The SDK owns configuration, auth headers, retries and status errors. The
body is read as raw bytes and parsed with orjson (``parse.py``): building a
pydantic object per chunk would cost several times the rest of the
per-token path.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import httpx2
import openai
import orjson

from nanobot.config import AgentDefaults, ProviderConfig
from nanobot.errors import UpstreamCode, UpstreamError
from nanobot.providers.base import ClientOffer, Completion
from nanobot.providers.parse import Malformed, Reported, StreamParser, parse_completion, shorten
from nanobot.providers.sdk_client import TemplatedOpenAI
from nanobot.providers.transport import BODY_EXTENSION, PooledTransport
from nanobot.redact import Redactor, provider_secrets

_EXACT_BELOW = 64 * 1024
# Where a shared piece (the system message, the tools) goes in an encoded
# body: a raw NUL, which orjson never writes (it escapes control characters).
_MARK_BYTES = b"\x00"
_MARK = orjson.Fragment(_MARK_BYTES)


class OpenAICompatProvider:
    def __init__(
        self,
        name: str,
        config: ProviderConfig,
        defaults: AgentDefaults,
        pool_size: int = 1000,
        redact: Redactor | None = None,
    ) -> None:
        self.name = name
        # An upstream may quote the request's headers back in its error text.
        self._redact = redact or Redactor(provider_secrets(config))
        self.model = defaults.model
        self._temperature = defaults.temperature
        self._max_tokens = defaults.max_tokens
        self._client = TemplatedOpenAI(
            api_key=config.api_key or "none",
            base_url=config.api_base or None,
            default_headers=config.extra_headers or None,
            timeout=config.timeout,
            max_retries=config.max_retries,
            http_client=_http_client(config, pool_size),
        )
        # Absolute: the SDK then skips merging a relative path into its base
        # URL (a URL object copied and re-parsed) on every call.
        self._url = str(self._client.base_url).rstrip("/") + "/chat/completions"
        self._system_source: dict[str, Any] | None = None
        self._system_bytes = b""
        self._tools_source: list[dict[str, Any]] | None = None
        self._tools_bytes = b"[]"
        self._tools_open = b"["  # the server tools' JSON without its "]", then ","

    def _fail(self, what: str, code: UpstreamCode) -> UpstreamError:
        return UpstreamError(self._redact(f"provider '{self.name}' {what}"), code=code)

    def _encoded_tools(self, tools: list[dict[str, Any]]) -> bytes:
        """The tools' JSON, encoded once per tool set: the registry hands the same
        list until its set changes (it replaces the list then, never edits it)."""
        if tools is not self._tools_source:
            self._tools_bytes = orjson.dumps(tools)
            self._tools_open = self._tools_bytes[:-1] + b","
            self._tools_source = tools
        return self._tools_bytes

    def _system_piece(self, messages: list[dict[str, Any]]) -> bytes:
        """The system message's JSON, encoded once while the same message object
        comes back (the agent's, or its workspace cache's, per session), and
        shared by every call in flight; empty if the call has none."""
        first = messages[0] if messages else None
        if first is None or first.get("role") != "system":
            return b""
        if first is not self._system_source:
            self._system_bytes = orjson.dumps(first)
            self._system_source = first  # held, so its id cannot be reused by another
        return self._system_bytes

    def _tools_pieces(self, tools: list[dict[str, Any]] | None, client: bytes) -> tuple[bytes, ...]:
        """The tools' JSON: the server tools' (encoded once per set, and shared by
        every call's body) and the client's (once per request)."""
        if not client:
            return (self._encoded_tools(tools),) if tools else ()
        if not tools:
            return (b"[" + client + b"]",)
        self._encoded_tools(tools)
        return (self._tools_open, client + b"]")

    def _request_body(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        incremental: bool,
        response_format: dict[str, Any] | None,
        client: ClientOffer | None,
    ) -> tuple[bytes, ...]:
        """The call's JSON body, in pieces: the system message (~1 KB) and the
        server tools' schemas (4 KB with the default tools) are objects shared
        by every call in flight."""
        system = self._system_piece(messages)
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "stream": incremental,
            "temperature": self._temperature,
            "max_tokens": self._max_tokens,
        }
        if incremental:
            payload["stream_options"] = {"include_usage": True}
        tools_json = self._tools_pieces(tools, client.tools if client is not None else b"")
        if tools_json:
            payload["tools"] = _MARK
        if client is not None:
            if client.tool_choice is not None and tools_json:
                payload["tool_choice"] = client.tool_choice
            if client.parallel_tool_calls is not None and tools_json:
                payload["parallel_tool_calls"] = client.parallel_tool_calls
        if response_format is not None:
            payload["response_format"] = response_format
        if not system:
            return _pieces(orjson.dumps(payload), (tools_json,) if tools_json else ())
        # The mark stands in for the system message only while it is encoded
        # (no await between): cheaper than a copy of the whole window.
        first, messages[0] = messages[0], _MARK  # type: ignore[call-overload]
        try:
            body = orjson.dumps(payload)
        finally:
            messages[0] = first
        return _pieces(body, ((system,), tools_json) if tools_json else ((system,),))

    async def _open(self, request: tuple[bytes, ...]) -> Body:
        """Send the call; its answer's body, the one thing the stream keeps of the response.

        The SDK's generic post (in its cheaper form, sdk_client.py) keeps its
        auth, retries and status errors but skips the per-call TypedDict
        transform of ``create``, which costs more than the rest of the call on
        small requests; the body is encoded once with orjson instead of
        stdlib json. The answer comes back as a stream either way, and is read
        through the transport's own reader rather than httpx's generators.

        The response itself (its headers, its request with the whole prompt,
        the SDK's per-call objects) is dropped here, not held for as long as
        the stream is open: a few KB per open stream that nothing reads once
        the answer began.
        """
        response = await self._client.post_json(self._url, request, stream=True)
        return _body_of(response)

    async def stream(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        incremental: bool = True,
        response_format: dict[str, Any] | None = None,
        client: ClientOffer | None = None,
    ) -> AsyncGenerator[str | Completion, None]:
        # Encoded outside this generator's frame: the payload dict is dead once
        # sent, and the frame lives as long as the stream.
        request = self._request_body(messages, tools, incremental, response_format, client)
        try:
            body = await self._open(request)
            del request  # the prompt: sent, and no retry is left that would send it again
            try:
                read = body.read_some
                if incremental:
                    parser = StreamParser()
                    # Bytes, not aiter_lines(): the parser splits lines itself.
                    while (data := await read()) is not None:
                        for text in parser.feed(data):
                            yield text
                        if parser.done:
                            # The answer is whole at [DONE], whatever the upstream
                            # still sends or however it ends the body: the turn goes
                            # on now, and the rest drains in the background.
                            body.drain_on_close()
                            break
                else:
                    # A client that waits for the whole reply gains nothing from
                    # chunks: one body, parsed once.
                    pieces = []
                    while (data := await read()) is not None:
                        pieces.append(data)
            finally:
                await body.aclose()
            if incremental:
                if not parser.seen_any:
                    raise Malformed("the stream held no chunk")
                completion = parser.completion()
            else:
                completion = parse_completion(b"".join(pieces))
                if completion.text:
                    yield completion.text
        except httpx2.TimeoutException:  # the body stalled past the read timeout
            raise self._fail("timed out", "upstream_timeout") from None
        except openai.APIStatusError as exc:
            raise self._fail(f"answered HTTP {exc.status_code}: {_status_message(exc)}", "upstream_status") from None
        except Reported as exc:
            raise self._fail(f"reported an error: {exc.message}", "upstream_reported") from None
        except openai.APIConnectionError as exc:
            refused = _refused(exc)
            if isinstance(exc, openai.APITimeoutError) and refused is None:
                raise self._fail("timed out", "upstream_timeout") from None
            raise self._fail(
                f"is unreachable: {shorten(str(refused or exc.__cause__ or exc))}", "upstream_unreachable"
            ) from None
        except Malformed as exc:
            raise self._fail(f"sent a malformed answer: {exc}", "upstream_malformed") from None
        except UpstreamError:
            raise
        except Exception as exc:  # a body cut mid-stream surfaces as a transport error
            detail = shorten(f"{type(exc).__name__}: {exc}")
            raise self._fail(f"failed mid-answer: {detail}", "upstream_broken_stream") from None
        yield completion

    async def close(self) -> None:
        await self._client.close()


class Body(Protocol):
    """A response body as the provider reads it (the transport's own body is one)."""

    read_some: Callable[[], Awaitable[bytes | None]]  # the next body bytes, None at the end

    def drain_on_close(self) -> None:
        """The reader has its answer: the rest of the body may drain in the background."""

    async def aclose(self) -> None: ...


class _Decoded:
    """A body read through httpx: the decoded byte stream (or the raw one when
    there is no content encoding to undo). Holds the response, which closes it."""

    __slots__ = ("_response", "read_some")

    def __init__(self, response: httpx2.Response, encoded: bool) -> None:
        self._response = response
        stream = response.aiter_bytes() if encoded else response.stream
        assert isinstance(stream, AsyncIterable)  # an async client's response
        chunks: AsyncIterator[bytes] = stream.__aiter__()
        self.read_some: Callable[[], Awaitable[bytes | None]] = functools.partial(anext, chunks, None)

    def drain_on_close(self) -> None:
        body = self._response.extensions.get(BODY_EXTENSION)
        if body is not None:
            body.drain_on_close()

    async def aclose(self) -> None:
        await self._response.aclose()


def _body_of(response: httpx2.Response) -> Body:
    """What reads ``response``'s body: from our own transport, its body itself
    (no generator layers between a received chunk and the parser, and nothing
    else of the response kept); otherwise httpx's byte stream."""
    body: Body | None = response.extensions.get(BODY_EXTENSION)
    encoded = "content-encoding" in response.headers
    if body is not None and not encoded:
        return body
    return _Decoded(response, encoded)


def _status_message(exc: openai.APIStatusError) -> str:
    """The upstream's own words for an error status: its error message, else its body, else the reason."""
    body = exc.body
    message = body.get("message") if isinstance(body, dict) else body
    if isinstance(message, str) and message.strip():
        return shorten(message.strip())
    if isinstance(body, dict) and body:
        return shorten(orjson.dumps(body).decode())
    return exc.response.reason_phrase or "no details"


def _pieces(body: bytes, shared: tuple[tuple[bytes, ...], ...]) -> tuple[bytes, ...]:
    """``body`` with its marks replaced in order by the ``shared`` pieces, without orjson's spare capacity.

    orjson returns bytes with room to spare (4 KB for a short prompt), and the
    body is held until the upstream's answer begins: with hundreds of calls
    started together the slack adds up to megabytes, which the process keeps
    after they are freed. The pieces between the marks are exact-size
    copies. Past 64 KB the buffer's slack is mapped pages that were never
    written and take no memory, and copying megabytes of images would only
    cost the event loop: the body is joined whole instead.
    """
    if not shared:
        return (bytes(memoryview(body)) if len(body) < _EXACT_BELOW else body,)
    # orjson escapes every control character inside strings: each NUL is a mark.
    # index() per mark is a memchr; bytes.split runs several times slower here.
    pieces: list[bytes] = []
    start = 0
    for fill in shared:
        mark = body.index(_MARK_BYTES, start)
        pieces.append(body[start:mark])
        pieces += fill
        start = mark + 1
    pieces.append(body[start:])
    if len(body) < _EXACT_BELOW:
        return tuple(pieces)
    return (b"".join(pieces),)


def _http_client(config: ProviderConfig, pool_size: int) -> httpx2.AsyncClient:
    """The SDK's HTTP client on the lean transport of ``transport.py``, for http and https alike.

    Its keep-alive pool is sized for as many turns as run at once; it reads
    no proxy settings from the environment.
    """
    return httpx2.AsyncClient(
        transport=PooledTransport(pool_size), timeout=config.timeout, trust_env=False, follow_redirects=True
    )


def _refused(exc: BaseException) -> BaseException | None:
    """The refused or reset connection under ``exc``, if that is what it is (its message says more)."""
    seen = 0
    cause: BaseException | None = exc
    while cause is not None and seen < 10:
        if isinstance(cause, ConnectionError):
            return cause
        cause = cause.__cause__ or cause.__context__
        seen += 1
    return None
