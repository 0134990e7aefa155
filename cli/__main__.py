"""``python -m cli`` runs the ``referral`` command."""

from cli.main import main

main()
