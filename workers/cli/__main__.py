"""``python -m workers.cli`` is the ``eventbus`` command."""

from __future__ import annotations

import sys

from workers.cli.main import main

sys.exit(main())
