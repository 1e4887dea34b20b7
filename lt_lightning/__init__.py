"""lt_lightning: long-tailed recognition and neural-collapse research on PyTorch Lightning."""

__version__ = "0.1.0"
