"""The built-in chat page, end to end in headless Chromium (Debian's, via Playwright).

Real processes all the way: a scripted upstream, `nanobot serve`, and the
page at `GET /` driven by a real browser. Two servers: one whose upstream
streams 8 "tok " words 120 ms apart (to see the reply grow), and one that
needs an API key and whose upstream echoes "You said: <text>".

Needs `pip install playwright` (no browser download) and `apt-get install
chromium`. Without them the tests skip, except under CI (`CI` set), where
they fail. `NANOBOT_UPDATE_SCREENSHOT=1` rewrites `docs/chat-page.png` (the README's
picture; otherwise it is written only when missing).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docx
import pytest
from builders import saved
from PIL import Image, ImageDraw
from servers import ROOT, ServerProcess, merge, upstream_config

from nanobot.testing.process import UpstreamProcess

API_KEY = "browser-test-key"
TOKENS = 8
SCREENSHOT = ROOT / "docs" / "chat-page.png"
VIEWPORT: ViewportSize = {"width": 1100, "height": 750}
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must install it: see .ci/run)")
    pytest.skip(reason)


try:
    from playwright.sync_api import Browser, Page, ViewportSize, expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None  # type: ignore[assignment]


def _chromium() -> str | None:
    for candidate in (os.environ.get("NANOBOT_CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium"):
        if candidate and Path(candidate).exists():
            return candidate
    return None


# ---- servers ----


def _page_url(server: ServerProcess, stack: list[Any]) -> str:
    """The URL of the chat page for ``server`` (the server itself serves it)."""
    return server.url


@pytest.fixture(scope="module")
def started() -> Iterator[list[Any]]:
    """Everything this module starts, stopped in reverse order at the end."""
    stack: list[Any] = []
    yield stack
    for item in reversed(stack):
        item.stop()


@pytest.fixture(scope="module")
def token_upstream(started: list[Any]) -> UpstreamProcess:
    up = UpstreamProcess.start(tokens=TOKENS, interval_ms=120)
    started.append(up)
    return up


@pytest.fixture(scope="module")
def token_site(started: list[Any], token_upstream: UpstreamProcess) -> str:
    server = ServerProcess(upstream_config(token_upstream.url))
    started.append(server)
    return _page_url(server, started)


@pytest.fixture(scope="module")
def echo_upstream(started: list[Any]) -> UpstreamProcess:
    up = UpstreamProcess.start()
    started.append(up)
    return up


@pytest.fixture(scope="module")
def key_server(started: list[Any], echo_upstream: UpstreamProcess) -> ServerProcess:
    server = ServerProcess(merge(upstream_config(echo_upstream.url), {"api": {"apiKey": API_KEY}}))
    started.append(server)
    return server


@pytest.fixture(scope="module")
def key_site(started: list[Any], key_server: ServerProcess) -> str:
    return _page_url(key_server, started)


# ---- the browser ----


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if sync_playwright is None:
        _unavailable("Playwright for Python is not installed (pip install playwright)")
    executable = _chromium()
    if executable is None:
        _unavailable("Chromium is not installed (apt-get install chromium)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Tab:
    """A fresh browser context (its own localStorage) with one page."""

    def __init__(self, browser: Browser, key: str | None) -> None:
        self.context = browser.new_context(viewport=VIEWPORT)
        self.context.set_default_timeout(10_000)
        if key:
            # As if the key had been entered before: kept in this browser's storage.
            stored = json.dumps(json.dumps(key))
            self.context.add_init_script(
                f"if (!localStorage.getItem('nanobot.apiKey')) localStorage.setItem('nanobot.apiKey', {stored});"
            )
        self.page: Page = self.context.new_page()
        self.problems: list[str] = []
        self.page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        self.page.on("console", self._console)

    def _console(self, message: Any) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            self.problems.append(f"CSP: {message.text}")

    # What a person does, and what they see.

    def send(self, text: str) -> None:
        self.page.fill("#message-input", text)
        self.page.press("#message-input", "Enter")

    def last_reply(self) -> Any:
        return self.page.locator("#log .message.assistant").last

    def wait_reply_done(self) -> Any:
        reply = self.last_reply()
        expect(reply).not_to_have_class(re.compile(r"\bstreaming\b"))
        expect(self.page.locator("#send")).to_be_enabled()
        return reply

    def reply_text(self) -> str:
        return self.wait_reply_done().locator(".text").text_content() or ""

    def current_session(self) -> str:
        return self.page.locator("#current-session").text_content() or ""

    def storage(self, name: str) -> Any:
        raw = self.page.evaluate("(name) => localStorage.getItem(name)", name)
        return None if raw is None else json.loads(raw)


@pytest.fixture
def tabs(browser: Browser) -> Iterator[Any]:
    opened: list[Tab] = []

    def open_tab(url: str, key: str | None = None) -> Tab:
        tab = Tab(browser, key)
        opened.append(tab)
        tab.page.goto(url)
        expect(tab.page.locator("#current-session")).to_have_text(re.compile(r"\S"))
        return tab

    yield open_tab
    problems = [p for tab in opened for p in tab.problems]
    for tab in opened:
        tab.context.close()
    assert not problems, problems


def _upstream_request(upstream: UpstreamProcess, needle: str) -> dict[str, Any]:
    """The recorded upstream request whose last message contains ``needle``."""
    for record in reversed(upstream.requests()):
        content = record["body"]["messages"][-1]["content"]
        if needle in json.dumps(content):
            return record["body"]
    raise AssertionError(f"no upstream request with {needle!r}")


def _history_text(body: dict[str, Any]) -> str:
    return json.dumps(body["messages"][:-1])


# ---- files the tests attach ----


def _docx(marker: str) -> bytes:

    document = docx.Document()
    document.add_heading("Quarterly report", level=1)
    document.add_paragraph(f"Revenue grew 12% in the quarter. Reference {marker}.")
    return saved(document)


def _png() -> bytes:

    image = Image.new("RGB", (320, 200))
    draw = ImageDraw.Draw(image)
    for y in range(200):
        draw.line([(0, y), (320, y)], fill=(40 + y // 2, 90 + y // 3, 200 - y // 3))
    draw.ellipse((200, 30, 280, 110), fill=(255, 214, 90))
    draw.polygon([(0, 200), (110, 90), (210, 200)], fill=(34, 80, 60))
    draw.polygon([(120, 200), (230, 110), (320, 200)], fill=(50, 110, 80))
    return saved(image, "PNG")


# ---- the tests ----


def test_the_reply_streams_into_the_page(tabs: Any, token_site: str, token_upstream: UpstreamProcess) -> None:
    tab = tabs(token_site)
    page = tab.page
    expect(page.locator("#message-input")).to_be_focused()
    with page.expect_request(re.compile(r"/v1/chat/completions$")) as sent:
        tab.send("hello there")
    body = sent.value.post_data_json
    assert body == {
        "messages": [{"role": "user", "content": "hello there"}],
        "session_id": tab.current_session(),
        "stream": True,
        "stream_options": {"include_tool_events": True},
    }

    reply = tab.last_reply()
    text = reply.locator(".text")
    expect(text).to_contain_text("tok")
    expect(page.locator("#send")).to_be_disabled()
    expect(page.locator("#stop")).to_be_visible()
    first = text.text_content() or ""
    time.sleep(0.3)
    second = text.text_content() or ""
    assert len(first.split()) < TOKENS, "the first reading came after the stream ended"
    assert second.startswith(first) and len(second) > len(first), (first, second)

    assert tab.reply_text().split() == ["tok"] * TOKENS
    expect(page.locator("#stop")).to_be_hidden()
    expect(page.locator("#model-name")).to_have_text("model: scripted")
    assert _upstream_request(token_upstream, "hello there")["messages"][-1]["content"] == "hello there"
    # Kept for display in this browser, per session.
    saved = tab.storage(f"nanobot.transcript.{tab.current_session()}")
    assert [e["role"] for e in saved] == ["user", "assistant"]
    assert saved[1]["text"].split() == ["tok"] * TOKENS


def test_stop_aborts_the_stream(tabs: Any, token_site: str) -> None:
    tab = tabs(token_site)
    page = tab.page
    tab.send("stop me soon")
    text = tab.last_reply().locator(".text")
    expect(text).to_contain_text("tok")
    page.click("#stop")
    expect(tab.last_reply().locator(".status")).to_have_text("Stopped.")
    expect(page.locator("#send")).to_be_enabled()
    expect(page.locator("#stop")).to_be_hidden()
    words = (text.text_content() or "").split()
    time.sleep(0.4)
    assert (text.text_content() or "").split() == words and len(words) < TOKENS


def test_the_page_asks_for_the_key_once_and_retries(tabs: Any, key_site: str, echo_upstream: UpstreamProcess) -> None:
    tab = tabs(key_site)
    page = tab.page
    form = page.locator("#key-form")
    expect(form).to_be_hidden()
    tab.send("hi with a key")
    expect(form).to_be_visible()
    expect(page.locator("#key-message")).to_contain_text("Missing API key")
    expect(tab.last_reply().locator(".status")).to_contain_text("Waiting for the API key")
    expect(page.locator("#key-input")).to_be_focused()

    page.fill("#key-input", "not-the-key")
    page.click("#key-form button[type=submit]")
    expect(page.locator("#key-message")).to_contain_text("Incorrect API key provided.")
    expect(form).to_be_visible()

    with page.expect_request(re.compile(r"/v1/chat/completions$")) as sent:
        page.fill("#key-input", API_KEY)
        page.click("#key-form button[type=submit]")
    assert sent.value.headers["authorization"] == f"Bearer {API_KEY}"
    assert tab.reply_text() == "You said: hi with a key"
    expect(form).to_be_hidden()
    assert tab.storage("nanobot.apiKey") == API_KEY
    expect(page.locator("#forget-key")).to_be_visible()

    # After a reload: the transcript is still shown and the key still sent.
    page.reload()
    expect(page.locator("#log .message")).to_have_count(2)
    tab.send("and again")
    assert tab.reply_text() == "You said: and again"
    expect(form).to_be_hidden()
    assert "hi with a key" in _history_text(_upstream_request(echo_upstream, "and again"))


def test_errors_show_the_servers_message(tabs: Any, key_site: str, tmp_path: Path) -> None:
    tab = tabs(key_site, key=API_KEY)
    page = tab.page
    # A failure after the stream started: an SSE error frame.
    tab.send("#status:500")
    reply = tab.wait_reply_done()
    expect(reply).to_have_class(re.compile(r"\berror\b"))
    expect(reply.locator(".status")).to_have_text(re.compile(r"answered HTTP 500"))
    expect(reply.locator(".status")).to_have_attribute("role", "alert")

    # A failure before it: a plain HTTP error with a JSON body.
    junk = tmp_path / "junk.bin"
    junk.write_bytes(bytes(range(256)) * 4)
    page.set_input_files("#file-input", str(junk))
    tab.send("what is this?")
    reply = tab.wait_reply_done()
    expect(reply).to_have_class(re.compile(r"\berror\b"))
    expect(reply.locator(".status")).to_contain_text("junk.bin")

    # The page goes on working; Shift+Enter is a new line, Enter sends.
    page.fill("#message-input", "still")
    page.press("#message-input", "Shift+Enter")
    page.type("#message-input", "here")
    expect(page.locator("#message-input")).to_have_value("still\nhere")
    page.press("#message-input", "Enter")
    assert tab.reply_text() == "You said: still\nhere"
    expect(page.locator("#message-input")).to_have_value("")


def test_sessions_switch_and_keep_their_own_history(
    tabs: Any, key_site: str, key_server: ServerProcess, echo_upstream: UpstreamProcess
) -> None:
    tab = tabs(key_site, key=API_KEY)
    page = tab.page
    sessions = page.locator("#session-list .session")
    first = tab.current_session()
    tab.send("apple in the first")
    assert tab.reply_text() == "You said: apple in the first"

    page.click("#new-session")
    second = tab.current_session()
    assert second != first
    expect(page.locator("#log .message")).to_have_count(0)
    expect(sessions).to_have_text([second, first])
    expect(page.locator("#session-list .session[aria-current=true]")).to_have_text(second)
    tab.send("banana in the second")
    assert tab.reply_text() == "You said: banana in the second"
    assert "apple" not in _history_text(_upstream_request(echo_upstream, "banana in the second"))

    page.click(f"#session-list .session >> text={first}")
    assert tab.current_session() == first
    expect(page.locator("#log .message.user .text")).to_have_text(["apple in the first"])
    tab.send("cherry back in the first")
    assert tab.reply_text() == "You said: cherry back in the first"
    history = _history_text(_upstream_request(echo_upstream, "cherry back in the first"))
    assert "apple in the first" in history and "banana" not in history

    # A session started elsewhere (curl, the SDK) can be opened by its id.
    shared = f"shared-{uuid.uuid4().hex[:8]}"
    request = urllib.request.Request(
        key_server.url + "/v1/chat/completions",
        data=json.dumps({"messages": [{"role": "user", "content": "durian via curl"}], "session_id": shared}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"},
    )
    with _OPENER.open(request, timeout=10) as response:
        assert response.status == 200
    page.fill("#open-session-id", shared)
    page.press("#open-session-id", "Enter")
    assert tab.current_session() == shared
    tab.send("elderberry")
    assert tab.reply_text() == "You said: elderberry"
    assert "durian via curl" in _history_text(_upstream_request(echo_upstream, "elderberry"))
    assert tab.storage("nanobot.sessions") == [shared, second, first]


MARKDOWN = """**bold** and *it* and `a<b>` see [site](https://example.com/x) and [bad](javascript:window.__xss=2)
<img src=x onerror="window.__xss=1"><script>window.__xss=3</script>

- one
- two

```
<b>not bold</b>
```"""


def test_replies_render_as_markdown_and_never_as_html(tabs: Any, key_site: str) -> None:
    tab = tabs(key_site, key=API_KEY)
    tab.send(MARKDOWN)
    reply = tab.wait_reply_done().locator(".text")
    expect(reply.locator("strong")).to_have_text("bold")
    expect(reply.locator("em")).to_have_text("it")
    expect(reply.locator("p code")).to_have_text("a<b>")
    expect(reply.locator("ul li")).to_have_text(["one", "two"])
    expect(reply.locator("pre code")).to_have_text("<b>not bold</b>")
    link = reply.locator("a")
    expect(link).to_have_count(1)  # the javascript: one stays text
    expect(link).to_have_attribute("href", "https://example.com/x")
    expect(link).to_have_attribute("rel", "noopener noreferrer nofollow")
    text = reply.text_content() or ""
    assert "[bad](javascript:window.__xss=2)" in text
    assert '<img src=x onerror="window.__xss=1"><script>window.__xss=3</script>' in text
    # Nothing the model wrote became an element or ran.
    assert reply.locator("img, script, b").count() == 0
    assert tab.page.evaluate("() => window.__xss") is None
    # The user's own message is shown exactly as typed.
    expect(tab.page.locator("#log .message.user .text").last).to_have_text(MARKDOWN)


def test_tool_progress_is_shown(tabs: Any, key_site: str) -> None:
    tab = tabs(key_site, key=API_KEY)
    tab.send('Look around: #tool:list_dir #tool:read_file {"path":"missing.txt"}')
    reply = tab.wait_reply_done()
    tools = reply.locator(".tools .tool")
    expect(tools).to_have_count(2)
    expect(reply.locator(".tool.done .tool-name")).to_have_text("list_dir")
    expect(reply.locator(".tool.failed .tool-name")).to_have_text("read_file")
    expect(reply.locator(".text")).to_contain_text("tool result:")
    saved = tab.storage(f"nanobot.transcript.{tab.current_session()}")
    assert sorted(t["name"] for t in saved[-1]["tools"]) == ["list_dir", "read_file"]


def test_attachments_go_as_multipart_and_the_reply_mentions_them(
    tabs: Any, key_site: str, echo_upstream: UpstreamProcess, tmp_path: Path
) -> None:
    tab = tabs(key_site, key=API_KEY)
    page = tab.page
    tab.send("Hello!")
    assert tab.reply_text() == "You said: Hello!"
    page.click("#new-session")  # so the picture shows two sessions
    tab.send("Hi! I have a report and a photo for you.")
    tab.wait_reply_done()

    marker = f"MARK{uuid.uuid4().hex[:8].upper()}"
    report = tmp_path / "quarterly-report.docx"
    report.write_bytes(_docx(marker))
    photo = tmp_path / "hills.png"
    photo.write_bytes(_png())
    page.set_input_files("#file-input", [str(photo), str(report)])
    expect(page.locator("#attachments .chip-name")).to_have_text(["hills.png", "quarterly-report.docx"])

    with page.expect_request(re.compile(r"/v1/chat/completions$")) as sent:
        tab.send("What do these say?")
    assert sent.value.headers["content-type"].startswith("multipart/form-data; boundary=")
    expect(page.locator("#attachments li")).to_have_count(0)

    user = page.locator("#log .message.user").last
    thumb = user.locator("img.thumb")
    expect(thumb).to_have_attribute("src", re.compile(r"^blob:"))
    expect(thumb).to_have_attribute("alt", "hills.png")
    page.wait_for_function("(img) => img.complete && img.naturalWidth === 320", arg=thumb.element_handle())
    expect(user.locator(".chip-name")).to_have_text("quarterly-report.docx")

    text = tab.reply_text()
    assert "[file: quarterly-report.docx]" in text and marker in text
    body = _upstream_request(echo_upstream, marker)
    parts = body["messages"][-1]["content"]
    assert any(p.get("type") == "image_url" for p in parts)

    # The README's picture: written when missing or asked for, so that a test
    # run does not change a tracked file each time (ids and marker are random).
    target = (
        SCREENSHOT
        if os.environ.get("NANOBOT_UPDATE_SCREENSHOT") or not SCREENSHOT.exists()
        else tmp_path / SCREENSHOT.name
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    page.locator("#message-input").blur()
    page.mouse.move(700, 620)  # no hover highlight in the picture
    page.screenshot(path=str(target))
    assert target.stat().st_size > 10_000
