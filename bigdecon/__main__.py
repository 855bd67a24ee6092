"""``python -m bigdecon``: the ``bigdecon`` command."""

import sys

from bigdecon.cli import main

sys.exit(main())
