import sys

from nanobot.cli import main

# Guarded: extraction workers are spawned interpreters that re-import the
# main module, and must not start a second server.
if __name__ == "__main__":
    sys.exit(main())
