"""``python -m xbench``."""

import sys

from xbench.cli import main

if __name__ == "__main__":
    sys.exit(main())
