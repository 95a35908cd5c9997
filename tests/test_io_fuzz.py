"""Property-based fuzzing of every coordinate reader and of the MRC header reader.

Random bytes and valid files with random bytes changed must give either a result or one `FormatError`
line naming the file, never another exception (IndexError, UnicodeError, numpy's or mrcfile's errors).
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hydrapick.io import FormatError, read_coordinates, read_micrograph, write_micrograph
from hydrapick.picks import Picks

DATA = Path(__file__).parent / "data"
# Modest by default (fast); FUZZ_EXAMPLES=600 shakes harder (it found both bugs fixed with these tests).
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 60)), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

SEEDS = {
    ".star": (DATA / "particles_relion31.star").read_bytes(),
    ".box": (DATA / "mic_001.box").read_bytes(),
    ".cbox": (DATA / "mic_001.cbox").read_bytes(),
    ".txt": (DATA / "topaz_picks.txt").read_bytes(),
    ".cs": (DATA / "cryosparc_picks.cs").read_bytes(),
}


def _mrc_bytes() -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "m.mrc"
        write_micrograph(path, np.arange(12 * 10, dtype=np.float32).reshape(12, 10), 1.5)
        return path.read_bytes()


MRC = _mrc_bytes()


@st.composite
def mutated(draw, seed: bytes, region: int | None = None):
    """``seed`` with a few bytes replaced, inserted or cut (within the first ``region`` bytes if given)."""
    data = bytearray(seed)
    limit = min(len(data), region or len(data))
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, max(0, limit - 1)))
        action = draw(st.sampled_from(["replace", "insert", "cut", "truncate"]))
        value = draw(st.binary(min_size=1, max_size=4))
        if action == "replace":
            data[at:at + len(value)] = value
        elif action == "insert":
            data[at:at] = value
        elif action == "cut":
            del data[at:at + len(value)]
        else:
            del data[draw(st.integers(0, len(data))):]
    return bytes(data)


def _read_or_format_error(path: Path, reader) -> None:
    try:
        result = reader(path)
    except FormatError as exc:
        message = str(exc)
        assert message and "\n" not in message and path.name in message, message
        return
    assert isinstance(result, Picks) or hasattr(result, "data")


def _text_mutations(seed: bytes):
    tokens = st.sampled_from([b" ", b"\n", b"nan", b"inf", b"-1e400", b"loop_", b"data_", b"_rln", b"#",
                              b"\t", b"1e30", b"\xff", b"\x00", b"'", b"\"", b"-"])
    return st.one_of(mutated(seed), st.binary(max_size=300),
                     st.lists(tokens, max_size=60).map(b"".join),
                     st.tuples(mutated(seed), tokens).map(lambda t: t[0] + t[1]))


@pytest.mark.parametrize("suffix", [".star", ".box", ".cbox", ".txt"])
def test_text_coordinate_readers_give_picks_or_one_format_error(tmp_path, suffix):
    path = tmp_path / f"mic_001{suffix}"

    @FUZZ
    @given(_text_mutations(SEEDS[suffix]))
    def check(data):
        path.write_bytes(data)
        _read_or_format_error(path, read_coordinates)

    check()


def test_cs_reader_gives_picks_or_one_format_error(tmp_path):
    path = tmp_path / "p.cs"
    header_end = SEEDS[".cs"].index(b"\n") + 1  # the .npy header: dtype, shape, order

    @FUZZ
    @given(st.one_of(mutated(SEEDS[".cs"], region=header_end), mutated(SEEDS[".cs"]),
                     st.binary(max_size=300), st.just(b"\x93NUMPY")))
    def check(data):
        path.write_bytes(data)
        _read_or_format_error(path, read_coordinates)

    check()


def test_cs_with_nonsense_values_gives_picks_or_one_format_error(tmp_path):
    from hydrapick.io.cryosparc import DTYPE

    path = tmp_path / "p.cs"

    size = st.integers(0, 2**32 - 1)

    @FUZZ
    @given(st.lists(st.tuples(st.floats(width=32), st.floats(width=32), size, size, st.binary(max_size=20)),
                    max_size=5))
    def check(rows):
        array = np.zeros(len(rows), dtype=DTYPE)
        for i, (fx, fy, h, w, name) in enumerate(rows):
            array[i]["location/center_x_frac"], array[i]["location/center_y_frac"] = fx, fy
            array[i]["location/micrograph_shape"] = (h, w)
            array[i]["location/micrograph_path"] = name
        buffer = io.BytesIO()
        np.save(buffer, array)
        path.write_bytes(buffer.getvalue())
        _read_or_format_error(path, read_coordinates)

    check()


def test_mrc_header_reader_gives_a_micrograph_or_one_format_error(tmp_path):
    path = tmp_path / "m.mrc"

    @FUZZ
    @given(st.one_of(mutated(MRC, region=1024), mutated(MRC), st.binary(max_size=1200)))
    def check(data):
        path.write_bytes(data)
        _read_or_format_error(path, read_micrograph)

    check()


def test_mrc_header_fields_set_to_extremes(tmp_path):
    """Each header word (nx, ny, nz, mode, ..., nsymbt) set to an extreme value."""
    path = tmp_path / "m.mrc"
    extremes = st.sampled_from([0, -1, -5, 1, 2**31 - 1, -(2**31), 3, 4, 6, 12, 101, 1024])

    @FUZZ
    @given(st.integers(0, 55), extremes)
    def check(word, value):
        data = bytearray(MRC)
        data[4 * word:4 * word + 4] = np.int32(value).tobytes()
        path.write_bytes(bytes(data))
        _read_or_format_error(path, read_micrograph)

    check()
