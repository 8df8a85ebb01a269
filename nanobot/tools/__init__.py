"""The agent's web and MCP tools (built by the tools builder)."""
