"""`python -m tessel`: the same as the `tessel` command.

Example:
    python -m tessel demo --sizes tiny
"""

import sys

from tessel.cli import main

if __name__ == "__main__":
    sys.exit(main())
