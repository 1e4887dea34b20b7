"""``python -m lt_lightning.cli`` (e.g. under ``torchrun``): the ``lt-lightning`` command."""

from lt_lightning.cli.main import main

main()
