"""Test and benchmark support: a scripted OpenAI-compatible upstream server.

`nanobot.testing.upstream` is the server (run it as a module); `process` starts
it as a child process and talks to its admin routes. Nothing here is imported
by the application itself.
"""
