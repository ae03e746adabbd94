"""``python -m jaxsafety.scaling``: see :mod:`jaxsafety.scaling.cli`."""

import sys

from jaxsafety.scaling.cli import main

if __name__ == "__main__":
    sys.exit(main())
