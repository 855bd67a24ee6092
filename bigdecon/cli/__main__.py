"""``python -m bigdecon.cli``: the ``bigdecon`` command."""

import sys

from bigdecon.cli import main

if __name__ == "__main__":
    sys.exit(main())
