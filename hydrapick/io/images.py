"""Micrographs stored as pictures: 8- or 16-bit (or float) TIFF, PNG and JPEG, read with Pillow.

CryoPPP, crYOLO exports and figures come as pictures rather than MRC files. They carry no pixel size
(give ``--apix``); their pixels are returned as stored, rows in file order (``data[y, x]``, the first
row at the top, as Pillow and every image viewer read it), which is how hydrapick reads an MRC file's
rows too: an array written as MRC and as a picture reads back the same. Colour pictures become grey.
`hydrapick.io.mrc.read_micrograph`, the one micrograph reader, calls `read_image` for these suffixes.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from .errors import FormatError, describe

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")

# Pillow modes whose pixels are grey values already (np.asarray gives them as stored).
_GREY = frozenset({"L", "I;16", "I;16L", "I;16B", "I;16N", "F"})
# ITU-R 601 luma, as Pillow's own RGB -> L conversion, but without rounding to 8 bits.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def is_image(name: str | os.PathLike) -> bool:
    """Whether a file name ends in one of `IMAGE_SUFFIXES` (any case)."""
    return os.fspath(name).lower().endswith(IMAGE_SUFFIXES)


def image_kind(name: str | os.PathLike) -> str:
    """``"TIFF"``, ``"PNG"`` or ``"JPEG"``, for messages."""
    suffix = os.fspath(name).lower().rsplit(".", 1)[-1]
    return {"tif": "TIFF", "tiff": "TIFF", "jpg": "JPEG", "jpeg": "JPEG"}.get(suffix, suffix.upper())


def read_image(path: str | os.PathLike) -> np.ndarray:
    """The grey pixels of a one-frame TIFF, PNG or JPEG file, as stored.

    Parameters
    ----------
    path : path
        An existing regular file (`hydrapick.io.errors.check_file` has been called).

    Returns
    -------
    (H, W) array
        ``data[y, x]``, rows in file order. uint8 for 8-bit pictures, uint16 for 16-bit ones, float32
        for float TIFFs, 32-bit integer pictures and colour pictures whose channels differ (ITU-R 601
        luma, unrounded); a colour picture whose channels are equal gives that channel exactly.

    Raises
    ------
    FormatError
        Not a readable picture, or one with several frames (a movie or a stack).
    """
    from PIL import Image, UnidentifiedImageError

    kind = image_kind(path)
    try:
        with warnings.catch_warnings():
            # A 4k x 4k micrograph is more pixels than Pillow's guard against decompression bombs.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                frames = int(getattr(image, "n_frames", 1))
                if frames > 1:
                    raise FormatError(f"{describe(path)} holds {frames} frames (a movie or a stack); "
                                      "a single 2D micrograph was expected (pick its motion-corrected sum)",
                                      path)
                data = _grey(image)
    except FormatError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        text = ("Pillow cannot identify it" if isinstance(exc, UnidentifiedImageError)
                else " ".join(str(exc).split()) or type(exc).__name__)
        raise FormatError(f"{describe(path)} is not a readable {kind} image: {text[:200]}", path) from exc
    return data


def _grey(image) -> np.ndarray:
    """One frame of a Pillow image as a writable grey array (see `read_image` for the dtypes)."""
    mode = image.mode
    if mode in _GREY:
        data = np.array(image)
        return data.astype(data.dtype.newbyteorder("="), copy=False)  # I;16B: big-endian in the file
    if mode in ("I", "1"):
        # 32-bit integers (some 16-bit pictures open this way) hold whole numbers that float32 keeps
        # exactly up to 2**24; a 1-bit picture becomes 0/1.
        return np.array(image, dtype=np.float32 if mode == "I" else np.uint8)
    rgb = np.array(image.convert("RGB"))  # palette, grey+alpha, RGB(A), CMYK, YCbCr: drop alpha
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 0] == rgb[..., 2]).all():
        return np.ascontiguousarray(rgb[..., 0])
    return rgb.astype(np.float32) @ _LUMA
