"""``python -m policies``: review and check the access policy (see ``policies/_cli.py``)."""

import sys

from policies._cli import main

sys.exit(main())
