"""``python -m jaxsafety.judges``: see :mod:`jaxsafety.judges.cli`."""

import sys

from jaxsafety.judges.cli import main

if __name__ == "__main__":
    sys.exit(main())
