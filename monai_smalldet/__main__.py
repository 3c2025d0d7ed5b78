"""``python -m monai_smalldet`` runs the ``monai-smalldet`` command."""

import sys

from .cli import main

sys.exit(main())
