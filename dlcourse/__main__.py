"""``python -m dlcourse``: the same as the ``dlcourse`` command."""

import sys

from dlcourse.cli import main

if __name__ == "__main__":
    sys.exit(main())
