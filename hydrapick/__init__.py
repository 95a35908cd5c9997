"""hydrapick: particle picking for single-particle cryo-EM with a bundled generic model.

The library is the product; the ``hydrapick`` command is a thin layer over it.
"""

__version__ = "0.1.0"

from .picks import Picks, micrograph_key  # noqa: E402

__all__ = ["Picks", "micrograph_key", "__version__"]
