"""``python -m retention``: the log inventory, the retention job, and holds.

python -m retention inventory [--config FILE]
"""

from __future__ import annotations

from retention._cli import main

raise SystemExit(main())
