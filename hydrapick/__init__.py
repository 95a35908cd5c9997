"""hydrapick: particle picking for single-particle cryo-EM with a bundled generic model.

The library is the product; the ``hydrapick`` command is a thin layer over it.
"""

from .picks import Picks, micrograph_key
from .version import __version__

__all__ = ["Picks", "micrograph_key", "pick", "__version__"]


def __getattr__(name: str):
    # Picking pulls in torch; import it only when used so `import hydrapick` stays light.
    if name == "pick":
        from .picking import pick

        return pick
    raise AttributeError(f"module 'hydrapick' has no attribute {name!r}")
