"""The nanobot benchmark harness: `python -m bench` (see `bench.__main__`)."""
