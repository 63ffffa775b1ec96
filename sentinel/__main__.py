"""`python -m sentinel` runs the command line."""

import sys

from sentinel.cli import main

sys.exit(main())
