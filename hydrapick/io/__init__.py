"""Input and output: micrographs (MRC; TIFF, PNG and JPEG read) and particle coordinates (RELION STAR,
EMAN box, crYOLO cbox, Topaz text, cryoSPARC .cs).

Coordinates are always in pixels of the micrograph as read (``data[y, x]``), origin at the centre of
the first pixel, y down; ``flip_y`` is the only, explicit, change of convention. See docs/formats.md.
"""

from .coordinates import (
    FORMATS,
    read_coordinate_folder,
    read_coordinate_folder_with_empty,
    read_coordinates,
    resolve_format,
    write_coordinate_folder,
    write_coordinates,
)
from .errors import FormatError
from .mrc import Micrograph, read_micrograph, read_micrograph_list, write_micrograph
from .star import write_relion_job, write_relion_micrograph_star

__all__ = [
    "FORMATS",
    "FormatError",
    "Micrograph",
    "read_coordinate_folder",
    "read_coordinate_folder_with_empty",
    "read_coordinates",
    "read_micrograph",
    "read_micrograph_list",
    "resolve_format",
    "write_coordinate_folder",
    "write_coordinates",
    "write_micrograph",
    "write_relion_job",
    "write_relion_micrograph_star",
]
