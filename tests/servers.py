"""Test-side names for the server launcher (shared with the bench)."""

from nanobot.testing.server_process import ROOT, TESTS_DIR, ServerProcess, merge, upstream_config

__all__ = ["ROOT", "TESTS_DIR", "ServerProcess", "merge", "upstream_config"]
