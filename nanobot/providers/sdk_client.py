"""The SDK's client, with the provider's one request shape built from a template.

Every call the provider makes is a POST of JSON bytes to one URL with the
same headers; only the body (and, on a retry, the retry count) changes. The
stock client rebuilds all of it per call: an options model (~40 µs), then the
URL, the merged headers and the request (~130 µs). Here the SDK builds that
request once, for a template, and later calls copy it. The SDK's
``request`` still runs every call: auth, retries, status errors and
timeouts stay its own. Whatever is not that exact shape, or a client the
template no longer describes (a cookie the upstream set, another key), is
built by the SDK as usual.

This reaches into the SDK's non-public parts (``FinalRequestOptions``,
``model_copy``, ``_build_request``, ``_idempotency_key``): the public
``AsyncOpenAI.post`` of the same bytes costs 37 % more CPU per
non-streaming turn. ``tests/test_sdk_client.py`` names each member and fails
on an SDK release without it, and checks every request against the SDK's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx2
import openai
from openai._compat import model_copy
from openai._models import FinalRequestOptions
from openai._types import NotGiven

from nanobot.providers.transport import BodyPieces

JSON_HEADERS = {"Content-Type": "application/json"}


@dataclass(frozen=True, slots=True)
class _Template:
    """The SDK's own request for one URL, without its body."""

    url: str
    api_key: str
    request_url: httpx2.URL
    headers: httpx2.Headers  # without Content-Length, which each body sets
    extensions: dict[str, Any]


class TemplatedOpenAI(openai.AsyncOpenAI):
    """``openai.AsyncOpenAI`` with ``post_json``, a cheaper ``post`` of JSON bytes."""

    _options: FinalRequestOptions | None = None
    _template: _Template | None = None

    @property
    def user_agent(self) -> str:
        # The SDK names the client class here; upstreams see the stock one's.
        return f"AsyncOpenAI/Python {self._version}"

    async def post_json(self, url: str, body: bytes | tuple[bytes, ...], *, stream: bool) -> httpx2.Response:
        """What ``post(url, cast_to=httpx2.Response, content=body, options={"headers": JSON_HEADERS},
        stream=stream)`` does, without building the options model per call. ``body`` may come in
        pieces, sent as they are (the transport writes them without joining them): a tuple,
        which the SDK knows it may send again on a retry."""
        return await self.request(httpx2.Response, self.json_options(url, body), stream=stream)

    def json_options(self, url: str, body: bytes | tuple[bytes, ...]) -> FinalRequestOptions:
        """The options ``post`` would make for ``body``: a shallow copy of one built once."""
        prototype = self._options
        if prototype is None or prototype.url != url:
            prototype = self._options = FinalRequestOptions.construct(
                method="post", url=url, content=b"", headers=JSON_HEADERS
            )
        options = model_copy(prototype)
        options.content = body
        return options

    def _idempotency_key(self) -> str:
        # Only an idempotency header would carry it, and OpenAI's client has
        # none: a fresh uuid4 per call would cost a urandom read for nothing.
        return super()._idempotency_key() if self._idempotency_header else "unsent"

    def _build_request(self, options: FinalRequestOptions, *, retries_taken: int = 0) -> httpx2.Request:
        if not self._templated(options):
            content = options.content
            if type(content) is tuple:  # pieces: built by the SDK, as one
                options = model_copy(options)
                options.content = b"".join(content)
            return super()._build_request(options, retries_taken=retries_taken)
        template = self._template
        if template is None or template.url != options.url or template.api_key != self.api_key:
            template = self._template = self._make_template(options)
        body = options.content
        assert isinstance(body, (bytes, tuple))  # _templated() holds only for a body already serialised
        stream: httpx2.ByteStream | BodyPieces
        if isinstance(body, bytes):
            stream, length = httpx2.ByteStream(body), len(body)
        else:
            stream = BodyPieces(body)
            length = stream.length
        headers = template.headers.copy()  # keeps the encoding found once for the template
        headers["Content-Length"] = str(length)
        if retries_taken:
            headers["x-stainless-retry-count"] = str(retries_taken)
        # Given a stream, Request neither looks into nor rebuilds its headers
        # (each time working out their encoding anew): they are set whole here.
        request = httpx2.Request("POST", template.request_url, stream=stream, extensions=template.extensions)
        request.headers = headers
        if isinstance(body, bytes):
            request.read()  # the body as ``content``, as a built request has it (no copy: one piece)
        return request

    def _templated(self, options: FinalRequestOptions) -> bool:
        """True for ``post_json``'s shape, on a client whose requests the template still describes."""
        prototype = self._options
        return (
            prototype is not None
            and options.headers is prototype.headers  # a copy of json_options' (so never edited)
            and options.url == prototype.url
            and options.method == "post"
            and (isinstance(options.content, bytes) or type(options.content) is tuple)
            and options.json_data is None
            and options.extra_json is None
            and options.files is None
            and not options.params
            and isinstance(options.timeout, NotGiven)
            and not self._client.cookies
            and not self._idempotency_header  # a key per call; OpenAI's client sends none
        )

    def _make_template(self, options: FinalRequestOptions) -> _Template:
        bodiless = model_copy(options)
        bodiless.content = b""
        request = super()._build_request(bodiless, retries_taken=0)
        headers = request.headers.copy()
        del headers["content-length"]
        return _Template(
            url=options.url,
            api_key=self.api_key,
            request_url=request.url,
            headers=headers,
            extensions=request.extensions,
        )
