"""The per-request state that flows through the pipeline stages.

Each stage reads what earlier stages filled in and fills its own fields; a
stage declares both (``requires``/``provides``, see ``nanobot.pipeline``) and
the pipeline checks the order at start-up. The comments below name the stage
that writes each group. Custom stages keep their own data in ``extras``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from nanobot.client_tools import ClientResult, ClientTools, PausedTurn
    from nanobot.services import Services


class Response(Protocol):
    """What ``encode`` (and custom stages) may do to the HTTP response."""

    def set_status(self, status_code: int, reason: str | None = None) -> None: ...
    def set_header(self, name: str, value: Any) -> None: ...
    def write(self, chunk: bytes) -> None: ...
    def flush(self) -> Awaitable[None]: ...

    def send_frame(self, frame: bytes) -> Awaitable[None] | None:
        """Send one body chunk at once (after the headers went out).

        Returns something to await only when the client is not keeping up,
        so a stream's buffered output stays bounded to about one frame.
        Raises :class:`~nanobot.errors.ClientDisconnected` once the client left.
        """


class RequestExitStack(AsyncExitStack):
    """An ``AsyncExitStack`` that keeps its callbacks in a list.

    A request pushes two or three, and the stock stack's empty ``deque``
    costs ~700 bytes for as long as the request runs: a stream's whole life.
    contextlib only appends to and pops from the end of ``_exit_callbacks``,
    which a list does as well (``tests/test_context.py`` holds it to that).
    """

    def __init__(self) -> None:  # all the base class's does, with a list
        self._exit_callbacks: list[Any] = []


@dataclass(slots=True)
class IncomingFile:
    """A file as the client sent it, before its bytes are checked."""

    param: str  # where it came from, e.g. ``messages[0].content[1].image_url.url``
    filename: str | None
    data: bytes | None = None  # raw bytes (a file read by the CLI)
    # Raw bytes in the pieces a multipart body brought them: joining 10 MB is
    # milliseconds of copying, so extract_files does it off the event loop.
    chunks: list[bytes] | None = None
    base64: str | None = None  # base64 text (a JSON data URL), decoded by extract_files
    from_image_part: bool = False


@dataclass(slots=True)
class Attachment:
    """A file after extraction: an image for the LLM, or a document's text."""

    name: str
    kind: str  # "image" or a document kind
    mime: str
    text: str | None = None  # documents
    data_url: str | None = None  # images
    path: str | None = None  # where the upload was kept


@dataclass(slots=True)
class RequestContext:
    # set by the handler (nanobot/server/chat.py) before the first stage: START_FIELDS
    services: Services
    method: str
    path: str
    headers: Any  # tornado.httputil.HTTPHeaders
    body: bytes
    response: Response
    request_id: str
    started: float  # loop.time() when the request began
    deadline: float  # loop.time() by which the whole request must end
    exit_stack: AsyncExitStack = field(default_factory=RequestExitStack)
    multipart: Any = None  # a MultipartReader fed while the body arrived
    media_type: str | None = None  # Content-Type's media type as the server parsed it (None: decode parses it)
    # decode (stages/decode.py); validate adds a JSON body's files to ``files``
    payload: dict[str, Any] | None = None  # a JSON body
    form: dict[str, list[str]] | None = None  # multipart fields
    # validate (stages/validate.py)
    model: str = ""
    stream: bool = False
    include_usage: bool = False
    include_tool_events: bool = False
    session_id: str | None = None
    instructions: str | None = None  # the client's system/developer text (api.clientSystem "append")
    client_history: list[dict[str, Any]] | None = None  # api.clientHistory "use": the client's conversation
    response_format: dict[str, Any] | None = None  # json_object / json_schema: sent to the model
    client_tools: ClientTools | None = None  # the client's function tools, tool_choice, parallel_tool_calls
    # The messages end with tool results, no user message: a paused turn resumed
    # (server history: ``tool_results``), or the client's own tool loop ("use").
    resumes: bool = False
    tool_results: list[ClientResult] | None = None
    # responses_validate (stages/responses_validate.py): the rest of a /v1/responses
    # request (a nanobot.responses.request.ResponsesRequest); None on other routes
    responses: Any = None
    text: str = ""
    files: list[IncomingFile] = field(default_factory=list)
    # extract_files (stages/extract_files.py)
    attachments: list[Attachment] = field(default_factory=list)
    # resolve_session (stages/resolve_session.py)
    session_key: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)
    paused: PausedTurn | None = None  # the session's turn waiting for client tool results
    client_results: dict[str, str] | None = None  # ``tool_results`` checked against it: resume it
    # run_agent (stages/run_agent.py)
    events: AsyncIterator[Any] | None = None
    # encode (stages/encode.py); read by the handler when a request fails
    headers_sent: bool = False
    # how a failure after the headers is sent (None: the Chat Completions error frame)
    failure_frame: Callable[[Any], bytes] | None = None
    # present from the start, empty: any stage may add to them (in START_FIELDS)
    response_headers: dict[str, str] = field(default_factory=dict)  # sent with the answer, or the error
    extras: dict[str, Any] = field(default_factory=dict)  # custom stages' own data, unchecked


# What every stage may read without an earlier stage writing it.
START_FIELDS = (
    "services",
    "method",
    "path",
    "headers",
    "body",
    "response",
    "request_id",
    "started",
    "deadline",
    "exit_stack",
    "multipart",
    "media_type",
    "response_headers",
    "extras",
    # Written by validate, but neutral as they start (no client tools, no
    # results): a stage that replaces validate without knowing them still fits.
    "client_tools",
    "resumes",
    "tool_results",
)
