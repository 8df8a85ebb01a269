"""Every error row of the contract that needs no file and no remote LLM."""

from __future__ import annotations

import json
import re
import socket
import typing

import pytest
import requests
from common import CHAT


def post(server, body=None, *, data=None, headers=None, path=CHAT):
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    if body is not None:
        data = json.dumps(body).encode()
    return requests.post(server.url + path, data=data, headers=h)


def assert_error(r, status, type_, *, code=None, param=None):
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == type_
    assert isinstance(err["message"], str) and err["message"]
    assert "Traceback" not in err["message"]
    if code is not None:
        assert err["code"] == code
    if param is not None:
        assert err["param"] == param
    return err


USER = {"role": "user", "content": "hi"}


@pytest.mark.parametrize(
    "body, param",
    [
        ({}, "messages"),
        ({"messages": "hi"}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": [USER, USER]}, "messages"),
        ({"messages": [USER, {"role": "system", "content": "x"}]}, "messages[1]"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "assistant", "content": "x"}]}, "messages[0].role"),
        ({"messages": ["hi"]}, "messages[0]"),
        ({"messages": [{"role": "user"}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": ""}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": "   "}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": []}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": 42}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": ""}]}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages[0].content[0].text"),
        ({"messages": [{"role": "user", "content": ["x"]}]}, "messages[0].content[0]"),
        ({"messages": [{"role": "user", "content": [{"type": "audio"}]}]}, "messages[0].content[0].type"),
        ({"messages": [USER], "session_id": ""}, "session_id"),
        ({"messages": [USER], "session_id": "x" * 257}, "session_id"),
        ({"messages": [USER], "session_id": 12}, "session_id"),
        ({"messages": [USER], "session_id": "a\nb"}, "session_id"),
        ({"messages": [USER], "stream": "yes"}, "stream"),
        ({"messages": [USER], "stream": 1}, "stream"),
        ({"messages": [USER], "model": 5}, "model"),
        ({"messages": [USER], "stream_options": "yes"}, "stream_options"),
        ({"messages": [{"role": "user", "content": [{"type": "file", "file": "x"}]}]}, "messages[0].content[0].file"),
        (
            {"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "f1"}}]}]},
            "messages[0].content[0].file.file_data",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "file", "file": {"file_data": "data:text/plain;base64,aGk=", "filename": 3}}
                        ],
                    }
                ]
            },
            "messages[0].content[0].file.filename",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "file", "file": {"file_data": "data:text/plain;base64,"}}]}
                ]
            },
            "messages[0].content[0].file.file_data",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "messages[0].content[0].image_url.url",
        ),
    ],
)
def test_bad_requests_are_400(echo_server, body, param):
    assert_error(post(echo_server, body), 400, "invalid_request_error", param=param)


def test_multipart_bad_fields(echo_server):
    url = echo_server.url + CHAT
    r = requests.post(url, data={"message": "hi", "stream": "maybe"})
    assert_error(r, 415, "unsupported_media_type")  # form-urlencoded: refused before any field is read
    r = requests.post(url, files={"message": (None, "hi"), "stream": (None, "maybe")})
    assert_error(r, 400, "invalid_request_error", param="stream")
    r = requests.post(url, files={"message": (None, "hi"), "session_id": (None, "x" * 300)})
    assert_error(r, 400, "invalid_request_error", param="session_id")
    r = requests.post(url, files={"files": (None, "not a file")})
    assert_error(r, 400, "invalid_request_error", param="files")


def test_not_json_and_not_object(echo_server):
    assert_error(post(echo_server, data=b"{nope"), 400, "invalid_request_error", code="invalid_json")
    assert_error(post(echo_server, data=b"[1,2]"), 400, "invalid_request_error")
    assert_error(post(echo_server, data=b'"str"'), 400, "invalid_request_error")
    assert_error(post(echo_server, data=b""), 400, "invalid_request_error")
    deep = b"[" * 100_000 + b"]" * 100_000
    assert_error(post(echo_server, data=deep), 400, "invalid_request_error")


def test_model_mismatch_and_omitted(echo_server):
    err = assert_error(
        post(echo_server, {"messages": [USER], "model": "gpt-4o"}),
        400,
        "invalid_request_error",
        code="model_not_found",
        param="model",
    )
    assert "gpt-4o" in err["message"]
    for model in (None, ""):
        r = post(echo_server, {"messages": [USER], "model": model, "stream": None, "session_id": None})
        assert r.status_code == 200, r.text


def test_ignored_openai_fields(echo_server):
    body = {
        "messages": [USER],
        "model": "echo",
        "temperature": 1.7,
        "max_tokens": 3,
        "n": 1,
        "user": "u",
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        "tool_choice": "auto",
        "top_p": 0.5,
        "presence_penalty": 0,
        "frequency_penalty": 0,
        "seed": 1,
        "logprobs": False,
    }
    r = post(echo_server, body)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "hi"


@pytest.mark.parametrize(
    "url, code",
    [
        ("https://example.com/cat.png", "remote_url_not_supported"),
        ("http://127.0.0.1/cat.png", "remote_url_not_supported"),
        ("file:///etc/passwd", "invalid_data_url"),
        ("ftp://x/y.png", "invalid_data_url"),
        ("data:image/png,rawbytes", "invalid_data_url"),
        ("data:image/png;base64", "invalid_data_url"),
        ("data:image/png;base64,@@@@not base64@@@@", "invalid_base64"),
    ],
)
def test_bad_image_urls(echo_server, url, code):
    content = [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": url}}]
    assert_error(
        post(echo_server, {"messages": [{"role": "user", "content": content}]}),
        400,
        "invalid_request_error",
        code=code,
        param="messages[0].content[1].image_url.url",
    )


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", "application/xml", None])
def test_unsupported_content_types(echo_server, ctype):
    headers = {"Content-Type": ctype} if ctype else {}
    s = socket.create_connection(("127.0.0.1", echo_server.port))
    body = b'{"messages":[{"role":"user","content":"hi"}]}'
    head = f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    s.sendall(head.encode() + b"\r\n" + body)
    resp = s.recv(65536).decode()
    s.close()
    assert resp.startswith("HTTP/1.1 415"), resp
    assert '"unsupported_media_type"' in resp


def test_unknown_route_and_wrong_method(echo_server):
    assert_error(requests.get(echo_server.url + "/v2/everything"), 404, "not_found_error")
    assert_error(requests.post(echo_server.url + "/v1/embeddings", json={}), 404, "not_found_error")
    assert_error(requests.get(echo_server.url + CHAT), 405, "invalid_request_error")
    assert_error(requests.delete(echo_server.url + "/v1/models"), 405, "invalid_request_error")
    assert_error(requests.put(echo_server.url + "/health"), 405, "invalid_request_error")


def test_body_too_large(make_server):
    server = make_server({"api": {"maxBodyBytes": 4096}})
    big = {"messages": [{"role": "user", "content": "x" * 5000}]}
    assert_error(post(server, big), 413, "request_too_large", code="body_too_large")

    def chunks():
        for _ in range(10):
            yield b"x" * 1000

    r = requests.post(server.url + CHAT, data=chunks(), headers={"Content-Type": "application/json"})
    assert_error(r, 413, "request_too_large")
    assert requests.get(server.url + "/health").status_code == 200
    ok = post(server, {"messages": [USER]})
    assert ok.status_code == 200


@pytest.mark.parametrize(
    "ctype, body",
    [
        ("multipart/form-data; boundary=xyz", b"--xyz\r\ngarbage no headers\r\n--xyz--\r\n"),
        ("multipart/form-data; boundary=xyz", b"totally wrong"),
        ("multipart/form-data", b"--xyz\r\n"),
        (
            "multipart/form-data; boundary=xyz",
            b'--xyz\r\nContent-Disposition: form-data; name="message"\r\n\r\n\xff\xfe\r\n--xyz--\r\n',
        ),
    ],
)
def test_malformed_multipart_is_400(echo_server, ctype, body):
    r = requests.post(echo_server.url + CHAT, data=body, headers={"Content-Type": ctype})
    assert_error(r, 400, "invalid_request_error")


def test_too_many_multipart_parts(echo_server):
    parts = b"".join(b'--b\r\nContent-Disposition: form-data; name="f%d"\r\n\r\nx\r\n' % i for i in range(10_000))
    r = requests.post(
        echo_server.url + CHAT, data=parts + b"--b--\r\n", headers={"Content-Type": "multipart/form-data; boundary=b"}
    )
    assert_error(r, 400, "invalid_request_error", code="too_many_parts")


def test_the_class_tree_in_the_docstring_names_every_error():
    """errors.py draws its class tree; a new error class must appear in it, with its status."""
    import nanobot.errors as errors

    drawn = errors.__doc__ or ""
    for name, cls in vars(errors).items():
        if isinstance(cls, type) and issubclass(cls, errors.ApiError) and cls.__module__ == errors.__name__:
            assert re.search(rf"\b{name}\s+{cls.status}\b", drawn), name


def test_every_upstream_code_is_documented():
    from servers import ROOT

    from nanobot.errors import UpstreamCode

    reliability = (ROOT / "docs" / "reliability.md").read_text()
    for code in typing.get_args(UpstreamCode):
        assert f"`{code}`" in reliability, code
