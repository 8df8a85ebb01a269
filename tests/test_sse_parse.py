"""StreamParser against the SDK's own SSE decoder, on the same bytes cut anywhere."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai._streaming import SSEDecoder

from nanobot.providers.parse import Malformed, Reported, StreamParser, parse_completion
from nanobot.testing.raw_replies import events

TEXTS = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=40)


def sdk_text(stream: bytes) -> str:
    """The text the SDK reads from ``stream``: its decoder, up to [DONE], as ``AsyncStream`` does."""
    decoder, parts = SSEDecoder(), []
    for sse in decoder.iter_bytes(iter([stream])):
        if sse.data.startswith("[DONE]"):
            break
        for choice in json.loads(sse.data).get("choices") or ():
            parts.append(choice["delta"].get("content") or "")
    return "".join(parts)


def parsed(stream: bytes, cuts: list[int]) -> StreamParser:
    parser = StreamParser()
    edges = [0, *sorted(c % (len(stream) + 1) for c in cuts), len(stream)]
    for start, end in zip(edges, edges[1:], strict=False):
        parser.feed(stream[start:end])
        if parser.done:
            break
    return parser


@settings(max_examples=200, deadline=None)
@given(
    text=TEXTS,
    eol=st.sampled_from([b"\n", b"\r", b"\r\n"]),
    multiline=st.booleans(),
    comments=st.booleans(),
    cuts=st.lists(st.integers(0, 5000), max_size=10),
)
def test_any_stream_cut_anywhere_reads_as_the_sdk_reads_it(
    text: str, eol: bytes, multiline: bool, comments: bool, cuts: list[int]
) -> None:
    parts = events(text, eol=eol, multiline=multiline)
    if comments:
        parts = [b": keep-alive" + eol + eol + b"event: chunk" + eol + part for part in parts]
    stream = b"".join(parts) + b": after done" + eol + eol
    parser = parsed(stream, cuts)
    assert parser.done
    assert parser.completion().text == sdk_text(stream) == text
    assert (parser.usage.prompt_tokens, parser.usage.completion_tokens) == (7, 5)


def test_nothing_after_done_is_read() -> None:
    """[DONE] ends the answer: a chunk (or garbage) after it is not parsed."""
    stream = b"".join(events("one")) + b"data: {not json\n\n"
    parser = StreamParser()
    assert parser.feed(stream) == ["one"] and parser.done


@pytest.mark.parametrize(
    ("chunk", "outcome"),
    [
        (b'{"error": null, "choices": [{"delta": {"content": "x"}}]}', "x"),
        (b'{"error": {}, "choices": [{"delta": {"content": "x"}}]}', "x"),
        (b'{"error": {"message": "overloaded"}}', Reported("overloaded")),
        (b'{"error": "busy"}', Reported("busy")),
        (b'{"error": {"code": 1}}', Reported("an unspecified error")),
        (b"[1]", Malformed("a stream chunk is not an object")),
    ],
)
def test_only_a_non_empty_error_is_one(chunk: bytes, outcome: str | Exception) -> None:
    parser = StreamParser()
    if isinstance(outcome, Exception):
        with pytest.raises(type(outcome), match=str(outcome)):
            parser.feed(b"data: " + chunk + b"\n\n")
    else:
        assert parser.feed(b"data: " + chunk + b"\n\n") == [outcome]


def test_lines_and_events_are_bounded() -> None:
    """An endless line, or an event of endless data lines, is refused rather than buffered."""
    with pytest.raises(Malformed, match="line"):
        parser = StreamParser()
        for _ in range(100):
            parser.feed(b"x" * 65536)
    with pytest.raises(Malformed, match="event"):
        parser = StreamParser()
        for _ in range(100):
            parser.feed(b"data: " + b"x" * 65536 + b"\n")


def _answer(call: dict[str, Any]) -> bytes:
    message = {"role": "assistant", "content": None, "tool_calls": [call]}
    return json.dumps({"choices": [{"message": message, "finish_reason": "tool_calls"}]}).encode()


NOT_TEXT: list[object] = [5, 1.5, True, ["a"], {"a": 1}]


@pytest.mark.parametrize("value", NOT_TEXT)
@pytest.mark.parametrize("field", ["name", "arguments", "id"])
def test_a_tool_call_whose_fields_are_not_text_is_malformed(field: str, value: object) -> None:
    """Kept in the session and sent again on every later turn, a number for a
    name would fail each of them: the answer is refused instead, whole or streamed."""
    call: dict = {"id": "call_1", "type": "function", "function": {"name": "read_file", "arguments": "{}"}}
    if field == "id":
        call["id"] = value
    else:
        call["function"][field] = value
    with pytest.raises(Malformed):
        parse_completion(_answer(call))
    delta = {"tool_calls": [{"index": 0, **call}]}
    chunk = json.dumps({"choices": [{"index": 0, "delta": delta}]}).encode()
    with pytest.raises(Malformed):
        StreamParser().feed(b"data: " + chunk + b"\n\n")


def test_a_tool_call_of_text_is_read_whole() -> None:
    call = {"id": "call_9", "type": "function", "function": {"name": "read_file", "arguments": '{"path": "a"}'}}
    completion = parse_completion(_answer(call))
    assert [(c.id, c.name, c.arguments) for c in completion.tool_calls] == [("call_9", "read_file", '{"path": "a"}')]
    missing = parse_completion(_answer({"function": {"name": "read_file"}}))
    assert [(c.id, c.arguments) for c in missing.tool_calls] == [("call_0", "{}")]
