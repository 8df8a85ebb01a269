"""What a server that does not use a feature never imports (resident memory at start).

Each check runs in a fresh interpreter: this test process has imported
everything by now.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

_PROBE = """
import json, sys
from nanobot.config import load_config
from nanobot.services import Services
import nanobot.server.app

services = Services.build(load_config(sys.argv[1]))
print(json.dumps(sorted(m for m in sys.modules if "." not in m)))
"""


def _top_level_modules(config: dict, tmp_path: Path) -> set[str]:
    path = tmp_path / "config.json"
    config["agents"]["defaults"]["workspace"] = str(tmp_path / "ws")
    path.write_text(json.dumps(config))
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, str(path)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_no_mcp_servers_no_mcp_sdk(tmp_path: Path) -> None:
    modules = _top_level_modules({"agents": {"defaults": {"provider": "echo", "model": "echo"}}}, tmp_path)
    assert "nanobot" in modules and "tornado" in modules  # the probe did import the server
    assert "mcp" not in modules
    # a JSON config, no cron job, no file sent: PyYAML, croniter and filetype stay out too
    assert not modules & {"yaml", "croniter", "dateutil", "filetype"}


def test_a_configured_mcp_server_loads_the_sdk(tmp_path: Path) -> None:
    config = {
        "agents": {"defaults": {"provider": "echo", "model": "echo"}},
        "tools": {"mcpServers": {"time": {"command": "true"}}},
    }
    assert "mcp" in _top_level_modules(config, tmp_path)
