"""``python -m overseer.cli``: the ``overseer`` command."""
from __future__ import annotations

import sys

from .main import main

sys.exit(main())
