"""TemplatedOpenAI: its requests are the ones the SDK itself would build and send."""

from __future__ import annotations

import inspect
import re

import httpx2
import openai
import pytest
from openai import _compat, _models
from openai._models import FinalRequestOptions
from openai._types import NotGiven
from test_transport import Upstream, aio, client, response, serving

from nanobot.providers.sdk_client import JSON_HEADERS, TemplatedOpenAI
from nanobot.providers.transport import BodyPieces

pytestmark = pytest.mark.timeout(20)

URL = "http://127.0.0.1:9/v1/chat/completions"


def sdk_client(**kwargs: object) -> TemplatedOpenAI:
    options = {"api_key": "k1", "base_url": "http://127.0.0.1:9/v1", "http_client": httpx2.AsyncClient(), **kwargs}
    sdk = TemplatedOpenAI(**options)  # type: ignore[arg-type]
    sdk._platform = openai._base_client.get_platform()  # what the first request() would set
    return sdk


def test_json_options_are_the_ones_post_builds() -> None:
    sdk = sdk_client()
    first, second = sdk.json_options(URL, b"1"), sdk.json_options(URL, b"22")
    stock = FinalRequestOptions.construct(method="post", url=URL, content=b"22", headers=JSON_HEADERS)
    assert repr(second.model_dump()) == repr(stock.model_dump())  # NOT_GIVEN has no __eq__
    assert first.content == b"1"  # each call its own copy


def templated(sdk: TemplatedOpenAI, body: bytes, retries: int = 0) -> httpx2.Request:
    """The request for ``body`` from the template, after checking that the template made it."""
    opts = sdk.json_options(URL, body)
    assert sdk._templated(opts)
    return sdk._build_request(opts, retries_taken=retries)


def built_by_sdk(sdk: TemplatedOpenAI, opts: FinalRequestOptions, retries: int = 0) -> httpx2.Request:
    return openai.AsyncOpenAI._build_request(sdk, opts, retries_taken=retries)


def same(a: httpx2.Request, b: httpx2.Request) -> None:
    assert (a.method, a.url, a.content, a.extensions) == (b.method, b.url, b.content, b.extensions)
    assert sorted(a.headers.multi_items()) == sorted(b.headers.multi_items())


@pytest.mark.parametrize("retries", [0, 1, 3])
@pytest.mark.parametrize("body", [b"{}", b'{"messages":[]}' * 500, "é".encode() * 3])
def test_request_equals_the_sdks_own(body: bytes, retries: int) -> None:
    sdk = sdk_client(default_headers={"X-Team": "a"}, timeout=12.5)
    templated(sdk, b"warm")  # the template now exists
    same(templated(sdk, body, retries), built_by_sdk(sdk, sdk.json_options(URL, body), retries))


def test_client_state_the_template_cannot_hold_goes_through_the_sdk() -> None:
    sdk = sdk_client()
    templated(sdk, b"{}")
    sdk._client.cookies.set("lb", "node-2", domain="127.0.0.1")  # as if the upstream had set it
    opts = sdk.json_options(URL, b"{}")
    assert not sdk._templated(opts)
    assert sdk._build_request(opts).headers["cookie"] == "lb=node-2"
    sdk._client.cookies.clear()
    sdk.api_key = "k2"
    assert templated(sdk, b"{}").headers["authorization"] == "Bearer k2"


@pytest.mark.parametrize(
    "change",
    [
        {"content": None, "json_data": {"a": 1}},
        {"content": None, "extra_json": {"b": 2}},
        {"params": {"q": "1"}},
        {"timeout": 3.0},
        {"headers": {"X-Other": "1"}},
        {"url": URL + "?x=1"},
    ],
    ids=lambda change: "+".join(change),
)
def test_other_shapes_are_built_by_the_sdk(change: dict[str, object]) -> None:
    sdk = sdk_client()
    templated(sdk, b"{}")
    opts = sdk.json_options(URL, b"{}")
    for name, value in change.items():
        setattr(opts, name, value)
    assert not sdk._templated(opts)
    same(sdk._build_request(opts), built_by_sdk(sdk, opts))


def test_an_idempotency_key_only_where_a_header_sends_it() -> None:
    sdk = sdk_client()
    assert sdk._idempotency_key() == "unsent"
    sdk._idempotency_header = "Idempotency-Key"  # as a client that sends one would have it
    keys = {sdk._idempotency_key() for _ in range(3)}
    assert len(keys) == 3 and "unsent" not in keys
    opts = sdk.json_options(URL, b"{}")
    opts.idempotency_key = "k-1"
    assert not sdk._templated(opts)
    assert sdk._build_request(opts).headers["idempotency-key"] == "k-1"


def heads_without(requests: list[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    return [re.sub(rb"(?im)^" + name + rb":[^\r]*\r\n", b"", head) for head, _ in requests]


@aio
async def test_post_json_sends_what_post_sends() -> None:
    async with Upstream(serving(response(b"{}"))) as up, client() as http:
        async with TemplatedOpenAI(base_url=f"{up.url}/v1", api_key="k", http_client=http, max_retries=0) as sdk:
            url = f"{up.url}/v1/chat/completions"
            stock = await sdk.post(url, cast_to=httpx2.Response, content=b'{"a":1}', options={"headers": JSON_HEADERS})
            assert sdk._template is None
            lean = await sdk.post_json(url, b'{"a":1}', stream=False)
            again = await sdk.post_json(url, b'{"a":22}', stream=False)
            assert sdk._template is not None  # the SDK's request() took the templated path
    assert stock.status_code == lean.status_code == again.status_code == 200
    (h1, b1), (h2, b2), (h3, b3) = up.requests
    assert (b1, b2, b3) == (b'{"a":1}', b'{"a":1}', b'{"a":22}')
    assert sorted(h1.split(b"\r\n")) == sorted(h2.split(b"\r\n"))
    assert b"Content-Length: 8\r\n" in h3


@aio
async def test_retries_count_and_resend_the_same_body() -> None:
    replies = (response(b"busy", "retry-after-ms: 1", status="503 Service Unavailable"), response(b"{}"))
    async with Upstream(serving(*replies)) as up, client() as http:
        async with TemplatedOpenAI(base_url=f"{up.url}/v1", api_key="k", http_client=http, max_retries=1) as sdk:
            answer = await sdk.post_json(f"{up.url}/v1/chat/completions", b'{"x":1}', stream=False)
    assert answer.status_code == 200
    (first, body1), (second, body2) = up.requests
    assert body1 == body2 == b'{"x":1}'
    assert b"x-stainless-retry-count: 0\r\n" in first and b"x-stainless-retry-count: 1\r\n" in second
    without_count = heads_without(up.requests, b"x-stainless-retry-count")
    assert without_count[0] == without_count[1]


def test_the_sdk_still_has_the_private_members_sdk_client_builds_on() -> None:
    """sdk_client.py uses these non-public parts of the openai SDK: this names them, so an SDK
    release that drops or renames one fails here, loudly, instead of changing what is sent.

    They stay because the public path (``AsyncOpenAI.post`` of the same bytes) measured 37 %
    more server CPU per non-streaming turn (docs/performance.md, 2026-12-04).
    """
    sdk = sdk_client()
    checks = {
        "openai._models.FinalRequestOptions.construct": hasattr(_models.FinalRequestOptions, "construct"),
        "openai._compat.model_copy": callable(getattr(_compat, "model_copy", None)),
        "openai._types.NotGiven": isinstance(NotGiven, type),
        "AsyncOpenAI._build_request(options, *, retries_taken)": "retries_taken"
        in inspect.signature(openai.AsyncOpenAI._build_request).parameters,
        "AsyncOpenAI._idempotency_key()": callable(getattr(openai.AsyncOpenAI, "_idempotency_key", None)),
        "AsyncOpenAI._idempotency_header": hasattr(sdk, "_idempotency_header"),
        "AsyncOpenAI._version": isinstance(getattr(sdk, "_version", None), str),
        "AsyncOpenAI._client (its httpx client)": isinstance(getattr(sdk, "_client", None), httpx2.AsyncClient),
    }
    fields = set(_models.FinalRequestOptions.model_fields)
    for name in ("method", "url", "headers", "content", "json_data", "extra_json", "files", "params", "timeout"):
        checks[f"FinalRequestOptions.{name}"] = name in fields
    missing = [name for name, present in checks.items() if not present]
    assert not missing, f"openai {openai.__version__} lacks {missing}: update nanobot/providers/sdk_client.py"


@pytest.mark.parametrize("templated_path", [True, False], ids=["template", "sdk"])
def test_a_body_in_pieces_is_sent_as_the_sdk_sends_its_bytes(templated_path: bool) -> None:
    """Pieces (some shared between calls) make the request the joined bytes would, and on the
    template's path they are not joined into a copy."""
    sdk = sdk_client(default_headers={"X-Team": "a"})
    templated(sdk, b"warm")
    shared = b'[{"type":"function"}]'
    body = (b'{"tools":', shared, b"}")
    if not templated_path:
        sdk._client.cookies.set("lb", "node-2", domain="127.0.0.1")
    opts = sdk.json_options(URL, body)
    request = sdk._build_request(opts)
    joined = b'{"tools":[{"type":"function"}]}'
    expected = built_by_sdk(sdk, sdk.json_options(URL, joined))
    assert (request.method, request.url, request.extensions) == (expected.method, expected.url, expected.extensions)
    assert sorted(request.headers.multi_items()) == sorted(expected.headers.multi_items())
    assert b"".join(request.stream) == joined  # type: ignore[arg-type]
    assert isinstance(request.stream, BodyPieces) == templated_path
