"""``python -m lightpref`` is the ``lightpref`` command."""

import sys

from lightpref.cli import main

sys.exit(main())
