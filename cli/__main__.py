"""``python -m cli``: the ``ingest`` command."""

from cli.main import main

main()
