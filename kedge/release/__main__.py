"""``python -m kedge.release build --out dist`` -- what ``make release`` runs."""

import sys

from kedge.cli.release import main

sys.exit(main())
