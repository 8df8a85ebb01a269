"""Config loading rules and the CLI's exit codes and messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import requests
from common import run_nanobot
from servers import ROOT, ServerProcess

from nanobot.config import ConfigError, load_config, parse_config, to_public_dict
from nanobot.testing.process import wait_for_ready_line


def test_defaults_and_camel_case():
    c = parse_config(
        {"api": {"maxFileBytes": 5, "corsOrigins": ["http://a"]}, "agents": {"defaults": {"maxToolIterations": 3}}}
    )
    assert c.api.max_file_bytes == 5 and c.api.cors_origins == ["http://a"]
    assert c.agents.defaults.max_tool_iterations == 3
    assert c.api.port == 8900 and c.agents.defaults.provider == "echo"
    assert c.pipeline.stages[0] == "decode"


@pytest.mark.parametrize(
    "data, message",
    [
        ({"api": {"port": "80"}}, "api.port: expected integer"),
        ({"api": {"port": True}}, "api.port: expected integer"),
        ({"api": {"prot": 1}}, "api.prot: unknown key"),
        ({"agents": {"defaults": {"temperature": "hot"}}}, "agents.defaults.temperature: expected number"),
        ({"providers": {"x": {"apiKey": 3}}}, "providers.x.apiKey: expected string"),
        ({"providers": {"x": {"bogus": 3}}}, "providers.x.bogus: unknown key"),
        ({"api": {"corsOrigins": "http://a"}}, "api.corsOrigins: expected array"),
        ({"api": {"corsOrigins": [1]}}, "api.corsOrigins[0]: expected string"),
        ({"channels": {"telegram": []}}, "channels.telegram: expected object"),
        ({"agents": {"defaults": {"provider": "nope"}}}, "agents.defaults.provider: unknown provider"),
        ({"api": {"clientHistory": "keep"}}, "api.clientHistory: expected one of 'reject', 'ignore', 'use'"),
        ({"api": {"clientHistory": 1}}, "api.clientHistory: expected one of 'reject', 'ignore', 'use'"),
        ({"api": {"clientSystem": "drop"}}, "api.clientSystem: expected one of 'append', 'ignore', 'reject'"),
        ({"tools": {"workspaceScope": "user"}}, "tools.workspaceScope: expected one of 'shared', 'session'"),
        ({"tools": {"exec": {"sandbox": "docker"}}}, "tools.exec.sandbox: expected one of 'bwrap', 'none'"),
        (
            {"tools": {"web": {"search": {"provider": "bing"}}}},
            "tools.web.search.provider: expected one of '', 'brave', 'searxng'",
        ),
        ({"pipeline": {"stages": "decode"}}, "pipeline.stages: expected array"),
        ({"api": {"port": 70000}}, "api.port: must be between 0 and 65535"),
        ({"api": {"maxConcurrentRequests": 0}}, "api.maxConcurrentRequests: must be positive"),
        ({"api": {"bodyTimeout": 0}}, "api.bodyTimeout: must be positive"),
        ({"api": {"workers": 0}}, "api.workers: must be positive"),
        ({"api": {"workers": "2"}}, "api.workers: expected integer"),
        ({"api": {"files": {"workers": 0}}}, "api.files.workers: must be positive"),
        ({"api": {"files": {"bogus": 1}}}, "api.files.bogus: unknown key"),
        ({"agents": {"defaults": {"maxHistoryMessages": -1}}}, "agents.defaults.maxHistoryMessages"),
    ],
)
def test_errors_name_the_key_path(data, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_config(data)


def test_choice_keys_keep_an_allowed_value():
    c = parse_config(
        {"api": {"clientHistory": "use"}, "tools": {"exec": {"sandbox": "none"}, "workspaceScope": "session"}}
    )
    assert (c.api.client_history, c.tools.exec.sandbox, c.tools.workspace_scope) == ("use", "none", "session")


def test_files_config_reaches_the_extractor_limits():
    limits = parse_config({"api": {"files": {"maxChars": 10, "timeout": 2.5, "workers": 1}}}).api.files.limits()
    assert (limits.max_chars, limits.timeout_seconds, limits.workers) == (10, 2.5, 1)
    assert limits.max_pages == parse_config({}).api.files.max_pages


def test_env_interpolation(monkeypatch):
    monkeypatch.setenv("NB_TEST_KEY", "k-123")
    c = parse_config({"providers": {"o": {"apiKey": "${NB_TEST_KEY}", "apiBase": "http://h/${NB_TEST_KEY}/v1"}}})
    assert c.providers["o"].api_key == "k-123" and c.providers["o"].api_base == "http://h/k-123/v1"
    monkeypatch.delenv("NB_TEST_MISSING", raising=False)
    with pytest.raises(ConfigError, match="providers.o.apiKey: environment variable NB_TEST_MISSING is not set"):
        parse_config({"providers": {"o": {"apiKey": "${NB_TEST_MISSING}"}}})


def test_yaml_and_lookup_order(tmp_path, monkeypatch):
    y = tmp_path / "c.yaml"
    y.write_text("api:\n  port: 9001\nagents:\n  defaults:\n    model: m1\n")
    assert load_config(str(y)).api.port == 9001
    j = tmp_path / "env.json"
    j.write_text(json.dumps({"api": {"port": 9002}}))
    local = tmp_path / "cwd"
    local.mkdir()
    (local / "config.json").write_text(json.dumps({"api": {"port": 9003}}))
    monkeypatch.chdir(local)
    monkeypatch.setenv("NANOBOT_CONFIG", str(j))
    assert load_config(str(y)).api.port == 9001  # --config first
    assert load_config(None).api.port == 9002  # then $NANOBOT_CONFIG
    monkeypatch.delenv("NANOBOT_CONFIG")
    assert load_config(None).api.port == 9003  # then ./config.json
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(str(bad))


def test_secrets_masked():
    c = parse_config(
        {
            "api": {"apiKey": "top"},
            "providers": {"o": {"apiKey": "sk-x", "extraHeaders": {"X-K": "v"}}},
            "channels": {"telegram": {"token": "123:abc"}},
        }
    )
    text = json.dumps(to_public_dict(c))
    assert "top" not in text and "sk-x" not in text and "123:abc" not in text and '"v"' not in text


@pytest.mark.parametrize(
    "config, needle",
    [
        ({"api": {"port": "x"}}, "api.port: expected integer"),
        ({"api": {"host": "0.0.0.0"}}, "set api.apiKey"),
        ({"api": {"host": "::"}}, "set api.apiKey"),
        ({"pipeline": {"stages": ["decode", "no_such_stage"]}}, "no_such_stage"),
        ({"pipeline": {"stages": ["decode", "no_such_module_xyz:Stage"]}}, "no_such_module_xyz:Stage"),
        ({"pipeline": {"stages": ["custom_stages:Broken"]}}, "custom_stages:Broken"),
        (
            {"pipeline": {"stages": ["decode", "validate", "extract_files", "resolve_session", "encode", "run_agent"]}},
            "stage 'encode' reads 'events', which no earlier stage writes (run_agent writes it)",
        ),
        (
            {"pipeline": {"stages": ["decode", "validate", "custom_stages:stamp", "extract_files", "resolve_session"]}},
            "stage 'stamp' reads 'session_key', which no earlier stage writes (resolve_session writes it)",
        ),
    ],
)
def test_serve_config_errors_exit_2(tmp_path, config, needle):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"agents": {"defaults": {"workspace": str(tmp_path / "ws")}}, **config}))
    env = {"PYTHONPATH": str(ROOT) + os.pathsep + str(ROOT / "tests")}
    p = subprocess.run(
        [sys.executable, "-m", "nanobot", "serve", "--config", str(path), "--port", "0"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert needle in p.stderr
    assert "Traceback" not in p.stderr


def test_config_check_reports_a_missing_bwrap_as_serve_does(tmp_path):
    """exec with the bwrap sandbox on a machine without bubblewrap: config check says so before serve would."""
    path = tmp_path / "c.json"
    config = {"agents": {"defaults": {"workspace": str(tmp_path / "ws")}}, "tools": {"exec": {"enabled": True}}}
    path.write_text(json.dumps(config))
    no_bwrap = tmp_path / "bin"  # a PATH with nothing on it
    no_bwrap.mkdir()
    check = run_nanobot("config", "check", "--config", str(path), env={"PATH": str(no_bwrap)})
    serve = run_nanobot("serve", "--config", str(path), "--port", "0", env={"PATH": str(no_bwrap)})
    assert (check.returncode, serve.returncode) == (2, 2), (check.stderr, serve.stderr)
    assert check.stderr == serve.stderr
    assert check.stdout == serve.stdout == ""
    assert check.stderr.startswith('nanobot: config error: tools.exec.sandbox: "bwrap" is chosen but bwrap is not')
    for command in ("apt-get install", "dnf install", "pacman -S", "apk add"):
        assert f"{command} bubblewrap" in check.stderr, command


def test_missing_env_var_exits_2(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"providers": {"o": {"apiKey": "${NB_SURELY_UNSET_VAR}"}}}))
    p = run_nanobot("agent", "-m", "hi", "--config", str(path))
    assert p.returncode == 2 and "NB_SURELY_UNSET_VAR" in p.stderr and "Traceback" not in p.stderr


def test_agent_command_echo(tmp_path):
    p = run_nanobot("agent", "-m", "Hello!", "--workspace", str(tmp_path / "ws"), cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "Hello!\n"
    assert (tmp_path / "ws.state" / "nanobot.db").exists()


def test_agent_command_uses_cli_sessions(tmp_path, upstream):
    cfg = tmp_path / "c.json"
    cfg.write_text(
        json.dumps(
            {
                "agents": {
                    "defaults": {"provider": "scripted", "model": "scripted", "workspace": str(tmp_path / "ws")}
                },
                "providers": {"scripted": {"apiKey": "k", "apiBase": upstream.url + "/v1", "maxRetries": 0}},
            }
        )
    )
    p = run_nanobot("agent", "-m", "remember kiwi", "--config", str(cfg), "--session", "s9")
    assert p.returncode == 0 and p.stdout.strip() == "You said: remember kiwi"
    upstream.clear()
    p = run_nanobot("agent", "-m", "what fruit", "--config", str(cfg), "--session", "s9")
    assert p.returncode == 0
    sent = upstream.requests()[-1]["body"]["messages"]
    assert [m["content"] for m in sent[1:]] == ["remember kiwi", "You said: remember kiwi", "what fruit"]
    p = run_nanobot("agent", "-m", "#status:500 boom", "--config", str(cfg))
    assert p.returncode == 1 and "provider 'scripted' answered HTTP 500" in p.stderr


def test_cli_overrides_host_port_workspace(tmp_path):

    with ServerProcess({}, args=("--port", "0", "--host", "127.0.0.1", "--workspace", str(tmp_path / "w2"))) as s:
        assert requests.get(s.url + "/health").status_code == 200
        assert requests.post(s.base_url + "/chat/completions", json={"messages": [{"role": "user", "content": "x"}]}).ok
    assert (tmp_path / "w2.state" / "nanobot.db").exists()


def test_shipped_config_serves_offline(tmp_path):
    """`nanobot serve` from the repo root picks up ./config.json (echo provider)."""

    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)}
    env.pop("NANOBOT_CONFIG", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "nanobot", "serve", "--port", "0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        line = wait_for_ready_line(proc, 30, prefix="nanobot API listening on")
        assert "provider: echo" in line
        url = line.split()[4]
        r = requests.post(url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
        assert r.json()["choices"][0]["message"]["content"] == "hi"
        assert (tmp_path / ".nanobot" / "workspace.state" / "nanobot.db").exists()
    finally:
        proc.terminate()
        assert proc.wait(timeout=15) == 0


@pytest.mark.parametrize(
    "data, needle",
    [
        ({"api": {"historyCacheBytes": -1}}, "api.historyCacheBytes: must not be negative"),
        ({"api": {"files": {"retentionDays": -1}}}, "api.files.retentionDays: must not be negative"),
    ],
)
def test_negative_bounds_are_refused(data, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_config(data)
