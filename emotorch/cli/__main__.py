"""``python -m emotorch.cli`` runs the command-line interface."""

import sys

from emotorch.cli import main

sys.exit(main())
