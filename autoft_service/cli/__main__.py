"""``python -m autoft_service.cli``: the ``autoft`` command."""

from autoft_service.cli.app import main

main()
