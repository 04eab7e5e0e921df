"""``python -m autoft_service.cli``: the ``autoft`` command."""

import sys

from autoft_service.cli.app import main

sys.exit(main())
