"""A scripted OpenAI-compatible upstream server for tests and the benchmark.

Run: `python -m nanobot.testing.upstream --host 127.0.0.1 --port 0
[--tokens N] [--interval-ms M] [--token-text WORD] [--backlog 4096]
[--no-record]`. It prints `READY <port>` once listening and serves until
SIGTERM/SIGINT. Replies follow the rules in `nanobot.testing.script`; the
admin routes (`/_requests`, `/_received`, `/_fail`) let tests inspect what
was sent and inject failures.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import ssl
import sys
import time
from collections.abc import Callable, Coroutine
from contextlib import suppress
from typing import Any

import orjson
import tornado.httpserver
import tornado.netutil
import tornado.web
from tornado.http1connection import HTTP1Connection
from tornado.iostream import StreamClosedError

from nanobot.testing.base import JsonHandler, NotFoundHandler, UpstreamState
from nanobot.testing.script import Reply, ScriptConfig, ScriptError, count_prompt_tokens, plan
from nanobot.testing.sinks import (
    FailHandler,
    ReceivedHandler,
    TelegramSinkHandler,
    WebhookSinkHandler,
)
from nanobot.testing.wire import (
    DONE_FRAME,
    GARBAGE_BODY,
    GARBAGE_FRAME,
    ChunkFrames,
    completion_body,
    split_arguments,
)

MODEL_ID = "scripted"
_MODELS_BODY = orjson.dumps(
    {"object": "list", "data": [{"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "nanobot-testing"}]}
)
_SHUTDOWN_GRACE_S = 2.0


class ChatCompletionsHandler(JsonHandler):
    """`POST /v1/chat/completions`: records the request, answers per the rules."""

    async def post(self) -> None:
        chosen = self._choose(self.read_json())
        if chosen is None:
            return
        body, reply = chosen
        stream = body.get("stream") is True
        if reply.garbage:
            self._send_garbage(stream)
            return
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if stream:
            with suppress(StreamClosedError):  # the client left; nothing to undo
                await self._stream(body, reply)
        else:
            await self._complete(body, reply)

    def _choose(self, body: Any) -> tuple[dict[str, Any], Reply] | None:
        """Record the request and pick its reply; None once an error was sent."""
        injected = self.state.failures.take(self.request.path)
        if self.state.record:
            self._record(body, injected is not None)
        if injected is not None:
            self.send_error_json(injected, "injected failure")
            return None
        if not isinstance(body, dict):
            self.send_error_json(400, "request body must be a JSON object")
            return None
        try:
            reply = plan(body, self.state.config)
        except ScriptError as exc:
            self.send_error_json(400, str(exc))
            return None
        if reply.leak:
            # As careless servers do: every header sent, the key included, quoted back.
            headers = sorted(self.request.headers.get_all(), key=lambda h: h[0] != "Authorization")
            quoted = "; ".join(f"{name}: {value}" for name, value in headers)
            self.send_error_json(reply.status, f"invalid credentials in request headers ({quoted})")
            return None
        if reply.status != 200:
            self.send_error_json(reply.status, f"scripted status {reply.status}")
            return None
        return body, reply

    def _record(self, body: Any, failed: bool) -> None:
        # Only the headers tests assert on; the body dict is stored as parsed.
        headers = {
            name: value
            for name, value in self.request.headers.get_all()
            if name == "Authorization" or name.startswith("X-")
        }
        record: dict[str, Any] = {
            "body": body if body is not None else self.request.body.decode("utf-8", "replace"),
            "headers": headers,
        }
        if failed:
            record["failed"] = True
        self.state.requests.append(record)

    def _send_garbage(self, stream: bool) -> None:
        if stream:
            self.set_header("Content-Type", "text/event-stream")
            self.finish(GARBAGE_FRAME)
        else:
            self.set_header("Content-Type", "application/json")
            self.finish(GARBAGE_BODY)

    def _ids(self, reply: Reply) -> tuple[str, list[str]]:
        ids = self.state.ids
        return f"chatcmpl-{next(ids)}", [f"call_{next(ids)}" for _ in reply.tool_calls]

    async def _complete(self, body: dict[str, Any], reply: Reply) -> None:
        if reply.die:
            self._abort()
            return
        if reply.interval and reply.chunks:
            # Stand-in for generation time: what streaming would have spent.
            await asyncio.sleep(reply.interval * len(reply.chunks))
        cid, call_ids = self._ids(reply)
        prompt_tokens = count_prompt_tokens(body["messages"])
        payload = completion_body(cid, int(time.time()), _model(body), reply, call_ids, prompt_tokens)
        self.send_json(payload)

    async def _stream(self, body: dict[str, Any], reply: Reply) -> None:
        include_usage = _include_usage(body)
        cid, call_ids = self._ids(reply)
        frames = ChunkFrames(cid, int(time.time()), _model(body), include_usage)
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        self.write(frames.role(bool(reply.tool_calls)))
        await self.flush()  # the headers go out with the role chunk
        if reply.tool_calls:
            await self._stream_tool_calls(frames, reply, call_ids)
        else:
            await self._stream_content(frames, reply)
        if reply.die:
            self._abort()  # mid-body, without [DONE]: a broken stream
            return
        self.write(frames.finish("tool_calls" if reply.tool_calls else "stop"))
        if include_usage:
            tokens = count_prompt_tokens(body["messages"])
            self.write(frames.usage(tokens, reply.completion_tokens))
        self.write(DONE_FRAME)
        await self.finish()

    async def _stream_content(self, frames: ChunkFrames, reply: Reply) -> None:
        chunks = reply.chunks[:2] if reply.die else reply.chunks
        piece: str | None = None
        frame = b""
        for next_piece in chunks:
            if next_piece is not piece:  # `--tokens` repeats one string: encode it once
                piece, frame = next_piece, frames.content(next_piece)
            if reply.interval:
                await asyncio.sleep(reply.interval)
            await self._send(frame)

    async def _stream_tool_calls(self, frames: ChunkFrames, reply: Reply, call_ids: list[str]) -> None:
        for index, (call, call_id) in enumerate(zip(reply.tool_calls, call_ids, strict=False)):
            await self._send(frames.tool_start(index, call_id, call.name))
            for piece in split_arguments(call.arguments):
                await self._send(frames.tool_arguments(index, piece))

    def _abort(self) -> None:
        """Drop the TCP connection, leaving whatever was sent incomplete."""
        connection = self.request.connection
        assert isinstance(connection, HTTP1Connection)
        connection.close()

    async def _send(self, frame: bytes) -> None:
        """Write one frame straight to the connection (headers already sent).

        Skipping `RequestHandler.flush` saves a good part of the per-chunk cost,
        which is most of the server's work when many streams run.
        """
        connection = self.request.connection
        assert connection is not None
        await connection.write(frame)


class ModelsHandler(JsonHandler):
    """`GET /v1/models`: the one scripted model."""

    def get(self) -> None:
        self.send_json(_MODELS_BODY)


class RequestsHandler(JsonHandler):
    """`GET /_requests` lists recorded chat requests; `DELETE` forgets them."""

    def get(self) -> None:
        self.send_json(orjson.dumps(list(self.state.requests)))

    def delete(self) -> None:
        self.state.requests.clear()
        self.send_json(b'{"ok":true}')


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    return model if isinstance(model, str) and model else MODEL_ID


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _no_access_log(handler: tornado.web.RequestHandler) -> None:
    """Access logging off: at bench rates it would cost more than the replies."""


def make_app(state: UpstreamState) -> tornado.web.Application:
    """The Tornado application serving every route over one shared state."""
    kwargs = {"state": state}
    return tornado.web.Application(
        [
            (r"/v1/chat/completions", ChatCompletionsHandler, kwargs),
            (r"/v1/models", ModelsHandler, kwargs),
            (r"/_requests", RequestsHandler, kwargs),
            (r"/_received", ReceivedHandler, kwargs),
            (r"/_fail", FailHandler, kwargs),
            (r"/bot([^/]+)/sendMessage", TelegramSinkHandler, kwargs),
            (r"/hook/([^/]+)", WebhookSinkHandler, kwargs),
        ],
        default_handler_class=NotFoundHandler,
        default_handler_args=kwargs,
        log_function=_no_access_log,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m nanobot.testing.upstream", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--tokens", type=_non_negative(int), default=0, help="default reply: N words")
    parser.add_argument("--interval-ms", type=_non_negative(float), default=0.0, help="pause before each word")
    parser.add_argument("--token-text", default="tok", help="the word of --tokens replies")
    parser.add_argument("--backlog", type=_non_negative(int), default=4096, help="listen() backlog")
    parser.add_argument("--no-record", action="store_true", help="do not keep chat requests for /_requests")
    parser.add_argument("--tls-cert", help="serve https with this PEM certificate (and --tls-key)")
    parser.add_argument("--tls-key", help="the PEM private key of --tls-cert")
    return parser.parse_args(argv)


def _non_negative(kind: type[int] | type[float]) -> Any:
    def convert(text: str) -> int | float:
        value = kind(text)
        if value < 0:
            raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
        return value

    convert.__name__ = kind.__name__  # argparse names the type in its errors
    return convert


async def serve(args: argparse.Namespace) -> None:
    """Listen, announce the port, and serve until SIGTERM or SIGINT."""
    config = ScriptConfig(tokens=args.tokens, interval_ms=args.interval_ms, token_text=args.token_text)
    state = UpstreamState(config=config, record=not args.no_record)
    tls = None
    if args.tls_cert:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(args.tls_cert, args.tls_key)
    server = tornado.httpserver.HTTPServer(make_app(state), ssl_options=tls)
    sockets = tornado.netutil.bind_sockets(args.port, args.host, backlog=args.backlog)
    server.add_sockets(sockets)
    stop = asyncio.Event()
    _on_signals(stop.set)
    print(f"READY {sockets[0].getsockname()[1]}", flush=True)
    await stop.wait()
    server.stop()
    # Bounded: a handler sleeping on `#slow` must not hold the exit.
    with suppress(asyncio.TimeoutError):
        await asyncio.wait_for(server.close_all_connections(), _SHUTDOWN_GRACE_S)


def _on_signals(callback: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, callback)
        except NotImplementedError:  # Windows event loops
            signal.signal(sig, lambda *_: loop.call_soon_threadsafe(callback))


def _raise_fd_limit() -> None:
    """Allow as many sockets as the hard limit does (bench opens thousands)."""
    try:  # POSIX only
        import resource
    except ImportError:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _run(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop when it is installed, else on the default asyncio loop."""
    try:  # optional: the scripted upstream runs on either loop
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    if hasattr(uvloop, "run"):
        uvloop.run(main)
    else:
        uvloop.install()
        asyncio.run(main)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _raise_fd_limit()
    _run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
