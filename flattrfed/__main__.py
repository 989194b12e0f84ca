"""`python -m flattrfed` runs the command line."""

import sys

from flattrfed.cli import main

sys.exit(main())
