"""Configured secrets never reach a client, a log line or ``config check``.

The scripted upstream's ``#leak`` answers 401 quoting every request header
back, the ``Authorization`` header (the provider key) included, as careless
servers do.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Callable

import requests
from common import CHAT
from servers import ROOT, ServerProcess, upstream_config

from nanobot.config import parse_config
from nanobot.redact import RedactingFilter, Redactor
from nanobot.testing.process import UpstreamProcess

KEY = "sk-live-0123456789abcdef"
ORG = "org-secret-987654321"
PASSWORD = "hunter2-pass-word"


def leaky_config(upstream: UpstreamProcess) -> dict:
    cfg = upstream_config(upstream.url)
    cfg["providers"]["scripted"]["apiKey"] = KEY
    cfg["providers"]["scripted"]["extraHeaders"] = {"X-Org-Token": ORG}
    return cfg


def assert_clean(text: str) -> None:
    for secret in (KEY, ORG, PASSWORD):
        assert secret not in text, text
        assert secret[:12] not in text, text  # not even a cut-off start


def test_upstream_quoting_the_key_leaks_it_nowhere(
    upstream: UpstreamProcess, make_server: Callable[..., ServerProcess]
) -> None:
    server = make_server(leaky_config(upstream), args=("--verbose",))
    message = {"role": "user", "content": "#leak"}
    r = requests.post(server.url + CHAT, json={"messages": [message]}, timeout=30)
    assert r.status_code == 502
    error = r.json()["error"]
    assert error["type"] == "upstream_error" and "***" in error["message"]
    assert_clean(r.text)

    r = requests.post(server.url + CHAT, json={"messages": [message], "stream": True}, timeout=30)
    assert r.status_code == 200
    frames = [line for line in r.text.splitlines() if line.startswith("data: ")]
    assert '"upstream_error"' in frames[-1] and "[DONE]" not in r.text
    assert_clean(r.text)

    server.stop()
    log = server.stderr_text()
    assert "401" in log and "***" in log  # the failure is logged, its secrets masked
    assert_clean(log)


def test_a_secret_cut_in_two_by_shortening_is_masked() -> None:
    redact = Redactor([KEY])
    assert redact(f"error: Bearer {KEY[:10]}...") == "error: Bearer ***..."
    assert redact("a b c...") == "a b c..."


def test_percent_encoded_secrets_and_short_values() -> None:
    redact = Redactor(["to/ken:with space", "abc"])
    assert redact("url /bot to%2Fken%3Awith%20space/ and to/ken:with space") == "url /bot ***/ and ***"
    assert redact("abc stays: too short to mask") == "abc stays: too short to mask"


def test_every_kind_of_configured_secret_is_known() -> None:
    config = parse_config(
        {
            "api": {"apiKey": "server-key-1"},
            "providers": {
                "p": {
                    "apiKey": KEY,
                    "apiBase": f"http://bob:{PASSWORD}@h/v1",
                    "extraHeaders": {"Authorization": f"Bearer {ORG}"},
                }
            },
            "channels": {
                "telegram": {"token": "123456:tg-token"},
                "webhook": {"url": "https://hooks.example/path/s3cr3t?sig=xyz", "headers": {"X-H": "hook-hdr"}},
            },
            "tools": {
                "web": {"search": {"apiKey": "search-key"}},
                "mcpServers": {
                    "m": {"command": "x", "env": {"TOKEN": "mcp-env-secret"}, "headers": {"X-M": "mcp-hdr-secret"}}
                },
            },
            "database": {"url": "postgresql://app:db-password@db/nanobot"},
        }
    )
    redact = Redactor.from_config(config)
    text = (
        f"{KEY} {PASSWORD} {ORG} server-key-1 123456:tg-token hook-hdr search-key mcp-env-secret "
        "mcp-hdr-secret db-password /path/s3cr3t?sig=xyz"
    )
    assert set(redact(text).split()) == {"***"}
    assert redact("POST https://hooks.example/path/s3cr3t?sig=xyz failed") == ("POST https://hooks.example/*** failed")


def test_log_filter_masks_arguments_and_tracebacks() -> None:
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Collect()
    handler.addFilter(RedactingFilter(Redactor([KEY])))
    log = logging.getLogger("nanobot.test_redaction")
    log.addHandler(handler)
    try:
        log.warning("upstream said %s", f"bad key {KEY}")
        try:
            raise RuntimeError(f"Authorization: Bearer {KEY}")
        except RuntimeError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
    assert len(records) == 2 and "***" in records[0] and "RuntimeError" in records[1]
    assert_clean("\n".join(records))


def test_config_check_shows_no_userinfo_webhook_path_or_env(tmp_path) -> None:
    cfg = {
        "providers": {"p": {"apiKey": KEY, "apiBase": f"http://bob:{PASSWORD}@llm.local/v1"}},
        "channels": {"webhook": {"enabled": True, "url": f"https://hooks.example/in/{ORG}"}},
        "tools": {"mcpServers": {"m": {"command": "x", "env": {"TOKEN": "mcp-env-secret"}}}},
        "database": {"url": f"postgresql://app:{PASSWORD}@db/nanobot"},
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    p = subprocess.run(
        [sys.executable, "-m", "nanobot", "config", "check", "--config", str(path)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    assert_clean(p.stdout)
    assert "mcp-env-secret" not in p.stdout
    shown = json.loads(p.stdout)
    assert shown["providers"]["p"]["apiBase"] == "http://***@llm.local/v1"
    assert shown["channels"]["webhook"]["url"] == "https://hooks.example/***"
