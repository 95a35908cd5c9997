"""Micrograph reading and writing: MRC modes, memory mapping, pixel size, damaged files, lists."""

from pathlib import Path

import mrcfile
import numpy as np
import pytest

from hydrapick.io import FormatError, Micrograph, read_micrograph, read_micrograph_list, write_micrograph

DATA = Path(__file__).parent / "data"
MODES = [np.int8, np.int16, np.uint16, np.float16, np.float32]


def _image(dtype, shape=(12, 20)) -> np.ndarray:
    # A pattern that distinguishes rows from columns, so a transposed or flipped read fails.
    y, x = np.mgrid[: shape[0], : shape[1]]
    return ((3 * y + x) % 100).astype(dtype)


def _new_mrc(path: Path, data: np.ndarray, voxel_size: float | None = 2.5) -> Path:
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(data)
        if voxel_size is not None:
            mrc.voxel_size = voxel_size
    return path


@pytest.mark.parametrize("dtype", MODES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("mmap", [True, False])
def test_every_mode_reads_as_stored(tmp_path, dtype, mmap):
    data = _image(dtype)
    path = _new_mrc(tmp_path / "m.mrc", data)
    mic = read_micrograph(path, mmap=mmap)
    assert isinstance(mic, Micrograph)
    assert mic.data.dtype == np.dtype(dtype)
    assert mic.shape == (12, 20)
    np.testing.assert_array_equal(mic.data, data)
    assert mic.data[2, 5] == data[2, 5]  # data[y, x]
    assert mic.pixel_size_A == pytest.approx(2.5)
    assert mic.path == str(path)


def test_mmap_is_a_memory_map_that_outlives_the_file_handle(tmp_path):
    data = _image(np.float32, (64, 48))
    path = _new_mrc(tmp_path / "m.mrc", data)
    mic = read_micrograph(path)
    assert isinstance(mic.data, np.memmap)
    assert not mic.data.flags.writeable  # the file is never modified through it
    assert float(mic.data.sum()) == pytest.approx(float(data.sum()))
    in_memory = read_micrograph(path, mmap=False)
    assert not isinstance(in_memory.data, np.memmap)


def test_pixel_size_override_and_unset_header(tmp_path):
    data = _image(np.float32)
    assert read_micrograph(_new_mrc(tmp_path / "a.mrc", data, 1.0)).pixel_size_A is None
    assert read_micrograph(_new_mrc(tmp_path / "b.mrc", data, None)).pixel_size_A is None
    assert read_micrograph(tmp_path / "b.mrc", pixel_size_A=3.2).pixel_size_A == 3.2
    assert read_micrograph(_new_mrc(tmp_path / "c.mrc", data, 1.34), pixel_size_A=0.9).pixel_size_A == 0.9
    with pytest.raises(ValueError, match="positive"):
        read_micrograph(tmp_path / "c.mrc", pixel_size_A=0)


def test_write_micrograph_round_trip_and_atomic(tmp_path):
    data = np.random.default_rng(0).normal(size=(30, 40)).astype(np.float32)
    path = tmp_path / "sub" / "out.mrc"
    write_micrograph(path, data, 1.7)
    mic = read_micrograph(path)
    np.testing.assert_array_equal(mic.data, data)
    assert mic.pixel_size_A == pytest.approx(1.7)
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.mrc"]  # no temporary left behind
    write_micrograph(path, data.astype(np.float64) * 2, 1.7)  # overwrites; float64 stored as float32
    mic = read_micrograph(path)
    assert mic.data.dtype == np.float32
    np.testing.assert_allclose(mic.data, data * 2)
    with pytest.raises(ValueError, match="2D"):
        write_micrograph(path, np.zeros((2, 3, 4), np.float32), 1.0)


def test_single_section_stack_is_accepted_and_multi_section_rejected(tmp_path):
    one = _new_mrc(tmp_path / "one.mrcs", _image(np.float32)[None])
    assert read_micrograph(one).shape == (12, 20)
    three = _new_mrc(tmp_path / "three.mrcs", np.stack([_image(np.float32)] * 3))
    with pytest.raises(FormatError, match=r"three\.mrcs' holds 3 sections") as info:
        read_micrograph(three)
    assert "\n" not in str(info.value)


def test_truncated_file_gives_one_line_error(tmp_path):
    path = _new_mrc(tmp_path / "m.mrc", _image(np.float32, (64, 64)))
    raw = path.read_bytes()
    cut = tmp_path / "cut.mrc"
    cut.write_bytes(raw[:-100])
    for mmap in (True, False):
        with pytest.raises(FormatError, match=r"File '.*cut\.mrc' is truncated") as info:
            read_micrograph(cut, mmap=mmap)
        assert "\n" not in str(info.value) and info.value.path == str(cut)
    header_only = tmp_path / "short.mrc"
    header_only.write_bytes(raw[:300])
    with pytest.raises(FormatError, match="short.mrc' is not a readable MRC file"):
        read_micrograph(header_only)


def test_garbage_and_missing_files(tmp_path):
    garbage = tmp_path / "garbage.mrc"
    garbage.write_bytes(np.random.default_rng(1).bytes(4096))
    with pytest.raises(FormatError, match="garbage.mrc' is not a readable MRC file"):
        read_micrograph(garbage)
    with pytest.raises(FormatError, match="does not exist"):
        read_micrograph(tmp_path / "absent.mrc")
    with pytest.raises(FormatError, match="is a folder; an MRC micrograph was expected"):
        read_micrograph(tmp_path)


def test_complex_mode_rejected(tmp_path):
    path = _new_mrc(tmp_path / "fft.mrc", np.zeros((8, 8), np.complex64))
    with pytest.raises(FormatError, match="complex"):
        read_micrograph(path)


def test_trailing_bytes_are_tolerated(tmp_path, caplog):
    path = _new_mrc(tmp_path / "m.mrc", _image(np.float32))
    with open(path, "ab") as f:
        f.write(b"\0" * 16)
    assert read_micrograph(path).shape == (12, 20)
    assert "larger than expected" in caplog.text


def test_compressed_file_is_read_into_memory(tmp_path):
    data = _image(np.int16)
    path = tmp_path / "m.mrc.gz"
    with mrcfile.new(path, compression="gzip") as mrc:
        mrc.set_data(data)
    mic = read_micrograph(path)
    np.testing.assert_array_equal(mic.data, data)


def test_relion31_micrograph_star_uses_optics_groups_and_project_folder():
    star = DATA / "relion_project" / "MotionCorr" / "job002" / "corrected_micrographs.star"
    entries = read_micrograph_list(star)
    project = (DATA / "relion_project").absolute()
    assert [Path(p) for p, _ in entries] == [project / "MotionCorr/job002/Movies/mic_001.mrc",
                                            project / "MotionCorr/job002/Movies/mic_002.mrc"]
    assert [s for _, s in entries] == pytest.approx([1.06, 1.30])


def test_relion30_micrograph_star_and_text_list():
    entries = read_micrograph_list(DATA / "micrographs_relion30.star")
    assert [Path(p).name for p, _ in entries] == ["mic_001.mrc", "mic_002.mrc"]
    assert Path(entries[0][0]).parent == (DATA / "Micrographs").absolute()
    assert entries[0][1] == pytest.approx(1.06)
    text = read_micrograph_list(DATA / "micrograph_list.txt")
    relative = str((DATA / "Micrographs/mic_001.mrc").absolute())
    assert text == [(relative, None), ("/data/abs/mic_002.mrc", None)]


def test_micrograph_list_errors(tmp_path):
    star = tmp_path / "mics.star"
    star.write_text("data_\nloop_\n_rlnCoordinateX #1\n1.0\n")
    with pytest.raises(FormatError, match="has no _rlnMicrographName column.*_rlnCoordinateX"):
        read_micrograph_list(star)
    empty = tmp_path / "mics.txt"
    empty.write_text("# nothing\n\n")
    with pytest.raises(FormatError, match="lists no micrographs"):
        read_micrograph_list(empty)


def test_particles_star_lists_each_micrograph_once():
    entries = read_micrograph_list(DATA / "particles_relion31.star")
    assert [Path(p).name for p, _ in entries] == ["mic_001.mrc", "mic_002.mrc"]
