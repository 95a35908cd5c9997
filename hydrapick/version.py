"""The version of hydrapick, stamped into checkpoints, reports and simulated datasets."""

__version__ = "0.1.0"
