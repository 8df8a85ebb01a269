"""web_fetch against a real local site: text, limits, redirects, and the SSRF rules.

The site listens on 127.0.0.1, which web_fetch refuses by default, so the
fetching tests whitelist 127.0.0.0/8; the refusal tests run without it.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest
from common import SCOPE

from nanobot.config import ConfigError, WebFetchConfig, parse_config
from nanobot.files.limits import FileLimits
from nanobot.testing.html_pages import NEVER, nested
from nanobot.testing.website import Site
from nanobot.tools.html_text import convert
from nanobot.tools.ssrf import parse_whitelist, refusal
from nanobot.tools.web_fetch import WebFetchTool


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    with Site() as s:
        yield s


@pytest.fixture(scope="module")
def fetch(runner: asyncio.Runner) -> Iterator:
    """web_fetch with 127.0.0.0/8 whitelisted; call it as fetch(url, **config)."""
    tools: dict[tuple, WebFetchTool] = {}

    def call(url: str, whitelist: tuple[str, ...] = ("127.0.0.0/8",), **config) -> str:
        key = (whitelist, tuple(sorted(config.items())))
        if key not in tools:
            tools[key] = WebFetchTool(WebFetchConfig(**config), parse_whitelist(list(whitelist)), 16000)
        return runner.run(tools[key].run({"url": url}, SCOPE))

    yield call
    for tool in tools.values():
        runner.run(tool.close())


def test_page_as_readable_text_with_url_and_status(site: Site, fetch) -> None:
    out = fetch(site.url + "/page")
    assert out.startswith(f"URL: {site.url}/page\nStatus: 200 OK\nContent-Type: text/html\n\n")
    assert "# Growing tomatoes on a balcony" in out and "Blossom end rot" in out
    assert not any(s in out for s in NEVER), "script or style text leaked"
    assert "Sign in" not in out and "Advertisement" not in out


def test_text_json_gzip_and_untyped(site: Site, fetch) -> None:
    assert fetch(site.url + "/text").endswith("\n\ncafé au lait\n")  # the declared latin-1
    assert '{"answer": 42}' in fetch(site.url + "/json")
    assert "zipped words zipped words" in fetch(site.url + "/gzip")
    assert fetch(site.url + "/notype").endswith("untyped page")


def test_non_text_is_an_error(site: Site, fetch) -> None:
    out = fetch(site.url + "/image")
    assert out.startswith("Error: ") and "image/png" in out and "not a page" in out
    out = fetch(site.url + "/binary")
    assert out.startswith("Error: ") and "binary content without a Content-Type" in out


def test_error_status_is_reported_with_the_page(site: Site, fetch) -> None:
    out = fetch(site.url + "/status/404")
    assert "Status: 404 Not Found" in out and "Nothing here, sorry." in out


def test_redirects_followed_up_to_five(site: Site, fetch) -> None:
    out = fetch(site.url + "/chain/4")  # 5 redirects
    assert out.startswith(f"URL: {site.url}/page\nStatus: 200")
    out = fetch(site.url + "/chain/5")  # 6
    assert out.startswith("Error: too many redirects (more than 5)")
    assert fetch(site.url + "/loop/a").startswith("Error: redirect loop")


def test_body_cut_at_max_bytes_and_connection_dropped(site: Site, fetch) -> None:
    before = site.sent[0]
    started = time.monotonic()
    out = fetch(site.url + "/endless", max_bytes=100_000)
    assert time.monotonic() - started < 5
    assert "Note: the body was cut at 100000 bytes" in out
    assert out.count("x") <= 100_000
    time.sleep(0.3)
    assert site.sent[0] - before < 20 * 1024 * 1024, "the server kept sending: the connection was not dropped"


@pytest.mark.alone
def test_big_page_is_read_whole(site: Site, fetch) -> None:
    out = fetch(site.url + "/big")
    assert "The long report" in out and "cut" not in out.split("\n\n", 1)[0]


def test_timeout(site: Site, fetch) -> None:
    started = time.monotonic()
    out = fetch(site.url + "/slow?s=10", timeout=1.0)
    assert out.startswith("Error: fetching") and "took longer than 1 s" in out
    assert time.monotonic() - started < 3


@pytest.mark.parametrize(
    "url, expect",
    [
        ("http://127.0.0.1:1/", "connection refused by 127.0.0.1:1"),
        ("http://nonexistent.invalid/", "could not resolve host 'nonexistent.invalid'"),
        ("ftp://example.com/", "only http and https"),
        ("file:///etc/passwd", "only http and https"),
        ("http:///nohost", "has no host"),
        ("http://127.0.0.1:99999/", "invalid port"),
    ],
)
def test_failures_are_error_results(fetch, url: str, expect: str) -> None:
    out = fetch(url)
    assert out.startswith("Error: ") and expect in out, out


def test_bad_argument(runner: asyncio.Runner) -> None:
    tool = WebFetchTool(WebFetchConfig(), [], 1000)
    assert runner.run(tool.run({}, SCOPE)) == "Error: 'url' must be a non-empty string."
    assert runner.run(tool.run({"url": 5}, SCOPE)).startswith("Error: ")


# --- SSRF ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "host, reason",
    [
        ("127.0.0.1", "loopback"),
        ("localhost", "loopback"),
        ("0x7f.1", "loopback"),  # another spelling of 127.0.0.1, judged after resolution
        ("2130706433", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("100.64.0.1", "shared"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("[::1]", "loopback"),
        ("[::]", "unspecified"),
        ("[::ffff:127.0.0.1]", "loopback"),
        ("[::ffff:169.254.169.254]", "link-local"),
        ("[64:ff9b::a00:1]", "private"),  # NAT64 of 10.0.0.1
        ("[2002:7f00:1::1]", "loopback"),  # 6to4 of 127.0.0.1
        ("[fe80::1]", "link-local"),
        ("[fd00::1]", "private"),
        ("[ff02::1]", "multicast"),
    ],
)
def test_private_addresses_refused_without_whitelist(fetch, host: str, reason: str) -> None:
    out = fetch(f"http://{host}:8080/latest/meta-data", whitelist=())
    assert out.startswith("Error: refused to connect to ") and reason in out, out
    assert "tools.ssrfWhitelist" in out


def test_refusal_happens_before_any_connect(fetch) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        out = fetch(f"http://127.0.0.1:{port}/", whitelist=())
        assert out.startswith("Error: refused to connect to 127.0.0.1")
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing ever connected
        assert fetch(f"http://127.0.0.1:{port}/", whitelist=("127.0.0.1/32",), timeout=0.5).startswith("Error: ")
        listener.accept()[0].close()  # whitelisted: the same fetch does connect
    finally:
        listener.close()


@pytest.mark.parametrize(
    "target",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://[::ffff:192.168.0.1]/",
        "http://localhost6:1/",
    ],
)
def test_redirect_to_private_address_refused_at_the_hop(site: Site, fetch, target: str) -> None:
    out = fetch(f"{site.url}/redirect?to={target}")
    assert out.startswith(f"Error: redirect 1 to {target}: "), out
    assert "refused to connect" in out or "could not resolve" in out


def test_whitelist_exempts_only_its_networks() -> None:
    whitelist = parse_whitelist(["10.0.0.0/8", "fd00::/8"])
    assert refusal("10.9.9.9", whitelist) is None
    assert refusal("fd12::1", whitelist) is None
    assert refusal("::ffff:10.1.1.1", whitelist) is None
    assert refusal("192.168.1.1", whitelist) == "private address"
    assert refusal("8.8.8.8", []) is None and refusal("2606:4700::1111", []) is None
    assert refusal("64:ff9b::808:808", []) is None  # NAT64 of a public address


def test_bad_whitelist_entry_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="tools.ssrfWhitelist: 'not-a-cidr'"):
        parse_config({"tools": {"ssrfWhitelist": ["10.0.0.0/8", "not-a-cidr"]}}).check()


# --- hostile pages --------------------------------------------------------------


def test_deeply_nested_and_badly_encoded_pages_are_bounded() -> None:
    started = time.monotonic()
    assert isinstance(convert("html;", nested(200_000).html.encode(), FileLimits()), str)
    assert time.monotonic() - started < 5
    out = convert("html;utf-8", b"<html><body><p>caf\xe9 \xff\xfe ok</p></body></html>", FileLimits())
    assert "ok" in out and "\ufffd" in out
    out = convert("html;no-such-codec", "<p>é</p>".encode(), FileLimits(max_chars=100))
    assert "é" in out
    out = convert("text;", b"y" * 500, FileLimits(max_chars=100))
    assert out.startswith("y" * 100) and "400 more characters" in out


def test_cancelled_fetch_drops_its_connection(site: Site, runner: asyncio.Runner) -> None:
    """A cancelled turn stops reading: the site stops sending soon after, far below maxBytes."""
    tool = WebFetchTool(WebFetchConfig(max_bytes=1 << 40, timeout=60), parse_whitelist(["127.0.0.0/8"]), 16000)

    async def cancel_midway() -> int:
        task = asyncio.create_task(tool.run({"url": site.url + "/endless"}, SCOPE))
        start = site.sent[0]
        while site.sent[0] - start < 1024 * 1024:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.5)  # the loop keeps running, as in the server
        settled = site.sent[0]
        await asyncio.sleep(0.5)
        return site.sent[0] - settled

    assert runner.run(cancel_midway()) < 1024 * 1024, "the site kept sending after the fetch was cancelled"
    runner.run(tool.close())
