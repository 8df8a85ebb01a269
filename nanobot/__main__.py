import sys

from nanobot.cli import main

sys.exit(main())
