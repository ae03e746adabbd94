"""``python -m jaxsafety.uplift``: see :mod:`jaxsafety.uplift.cli`."""

import sys

from jaxsafety.uplift.cli import main

if __name__ == "__main__":
    sys.exit(main())
