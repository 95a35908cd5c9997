"""The ``hydrapick`` command: option parsing and summaries only; the work is done by the library.

One module per command (pick, train, finetune, evaluate, simulate), each registering itself on the click
group `cli` (`hydrapick.cli.group`); ``hydrapick.cli:main`` is the console entry point.
"""

from . import evaluate, finetune, pick, simulate, train  # noqa: F401 - importing registers each command
from .group import cli, main

__all__ = ["cli", "main"]
