"""Micrographs as TIFF, PNG and JPEG pictures: read as stored, listed beside MRC, picked, evaluated and
trained on like MRC files.

Picking uses the tiny blob-trained model and the blob micrographs of test_picking.py: a picture whose
pixels equal an MRC file's must give that file's picks exactly; a JPEG at quality 100 nearly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from test_picking import DIAMETER_A, TINY, blob_image, trained_checkpoint

from hydrapick.cli import cli
from hydrapick.io import FormatError, read_coordinates, read_micrograph, write_micrograph
from hydrapick.io.inputs import gather_inputs
from hydrapick.picks import micrograph_key
from hydrapick.training import ManifestError
from hydrapick.training.finetune import load_labelled
from hydrapick.training.manifest import expand_micrographs

PIXEL_SIZE_A = 2.0
STAR_HEADER = "\ndata_\n\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n"


def _pattern(dtype, shape=(12, 20)) -> np.ndarray:
    # Distinguishes rows from columns and top from bottom, so a transposed or flipped read fails.
    y, x = np.mgrid[: shape[0], : shape[1]]
    return ((7 * y + x) % 200).astype(dtype)


def _save(path: Path, data: np.ndarray) -> Path:
    Image.fromarray(data).save(path, quality=100)  # quality only matters to JPEG
    return path


@pytest.mark.parametrize("suffix, dtype", [(".png", np.uint8), (".tif", np.uint8), (".png", np.uint16),
                                           (".tiff", np.uint16), (".tif", np.float32)],
                         ids=["png8", "tif8", "png16", "tiff16", "tif-float"])
def test_pictures_read_as_stored_with_the_rows_of_the_same_array_written_as_mrc(tmp_path, suffix, dtype):
    data = _pattern(dtype) * (dtype(300) if dtype == np.uint16 else dtype(1))  # 16-bit: beyond 255
    picture = read_micrograph(_save(tmp_path / f"m{suffix.upper()}", data))  # suffix in any case
    assert picture.data.dtype == np.dtype(dtype) and picture.shape == (12, 20)
    np.testing.assert_array_equal(picture.data, data)
    assert picture.data[2, 5] == data[2, 5] == 19 * (300 if dtype == np.uint16 else 1)  # data[y, x]
    write_micrograph(tmp_path / "m.mrc", data, PIXEL_SIZE_A)
    np.testing.assert_array_equal(read_micrograph(tmp_path / "m.mrc").data, picture.data)
    assert picture.pixel_size_A is None and picture.path == str(tmp_path / f"m{suffix.upper()}")
    assert read_micrograph(picture.path, pixel_size_A=1.5).pixel_size_A == 1.5


@pytest.mark.parametrize("suffix", [".jpg", ".jpeg"])
def test_jpeg_at_quality_100_is_within_one_grey_level(tmp_path, suffix):
    data = np.random.default_rng(0).integers(0, 256, (64, 48)).astype(np.uint8)  # the worst case: noise
    read = read_micrograph(_save(tmp_path / f"m{suffix}", data)).data
    assert read.dtype == np.uint8 and read.shape == (64, 48)
    assert np.abs(read.astype(int) - data).max() <= 1


def test_colour_pictures_become_grey(tmp_path):
    grey = _pattern(np.uint8)
    for name, picture in (("rgb.png", np.stack([grey] * 3, axis=-1)),
                          ("rgba.png", np.stack([grey] * 3 + [np.full_like(grey, 7)], axis=-1))):
        # Equal channels (a grey picture saved in colour) give the grey values exactly; alpha is dropped.
        read = read_micrograph(_save(tmp_path / name, picture)).data
        assert read.dtype == np.uint8
        np.testing.assert_array_equal(read, grey)
    colour = np.stack([grey, grey // 2, np.zeros_like(grey)], axis=-1)
    luma = read_micrograph(_save(tmp_path / "colour.tif", colour)).data
    np.testing.assert_allclose(luma, 0.299 * grey + 0.587 * (grey // 2), rtol=1e-5)


def test_bad_pictures_are_named_in_one_line(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"not a picture" * 20)
    with pytest.raises(FormatError, match=r"^File '.*junk.png' is not a readable PNG image"):
        read_micrograph(tmp_path / "junk.png")
    frames = [Image.fromarray(_pattern(np.uint8)) for _ in range(3)]
    frames[0].save(tmp_path / "movie.tif", save_all=True, append_images=frames[1:])
    with pytest.raises(FormatError, match=r"movie.tif' holds 3 frames \(a movie or a stack\)"):
        read_micrograph(tmp_path / "movie.tif")
    full = _save(tmp_path / "full.png", np.random.default_rng(1).integers(0, 256, (64, 64)).astype(np.uint8))
    (tmp_path / "cut.png").write_bytes(full.read_bytes()[:2000])
    with pytest.raises(FormatError, match="cut.png' is not a readable PNG image: image file is truncated"):
        read_micrograph(tmp_path / "cut.png")
    with pytest.raises(FormatError, match="missing.jpg' does not exist"):
        read_micrograph(tmp_path / "missing.jpg")


def test_folders_globs_and_manifests_list_pictures_beside_mrc(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("mics").mkdir()
    names = ["a.mrc", "b.png", "c.tif", "d.TIFF", "e.jpg", "f.jpeg"]
    for name in names:
        Path("mics", name).touch()
    Path("mics", "notes.txt").touch()
    expected = [f"mics/{n}" for n in names]
    assert [m.name for m in gather_inputs(["mics"])] == expected
    assert [m.name for m in gather_inputs(["mics/*"])] == expected
    assert expand_micrographs("mics") == expected  # training and fine-tuning manifests
    assert [micrograph_key(n) for n in names] == ["a", "b", "c", "d", "e", "f"]  # matched to coordinates


def _renderings(folder: Path) -> dict[str, np.ndarray]:
    """One blob micrograph as an 8-bit MRC (float32 holding 0-255), PNG, TIFF and JPEG, and as a
    16-bit MRC, PNG and TIFF; returns {file name: true centres}."""
    folder.mkdir()
    image, centres = blob_image(np.random.default_rng(3), (240, 320), 6, DIAMETER_A / PIXEL_SIZE_A)
    eight = np.clip(np.rint(128 + 30 * image), 0, 255).astype(np.uint8)
    sixteen = np.clip(np.rint(32768 + 6000 * image), 0, 65535).astype(np.uint16)
    write_micrograph(folder / "eight_mrc.mrc", eight.astype(np.float32), PIXEL_SIZE_A)
    write_micrograph(folder / "sixteen_mrc.mrc", sixteen, PIXEL_SIZE_A)
    for suffix in ("png", "tif", "jpg"):
        _save(folder / f"eight_{suffix}.{suffix}", eight)
    for suffix in ("png", "tif"):
        _save(folder / f"sixteen_{suffix}.{suffix}", sixteen)
    return {p.name: centres for p in folder.iterdir()}


def test_picture_renderings_give_the_picks_of_their_mrc(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    truth = _renderings(Path("mics"))
    result = CliRunner().invoke(cli, ["pick", "mics", "--model", trained_checkpoint(), "--diameter",
                                      str(DIAMETER_A), "--apix", str(PIXEL_SIZE_A), "-o", "picks.star"])
    assert result.exit_code == 0, result.output
    picks = {micrograph_key(name): p for name, p in read_coordinates("picks.star").by_micrograph()}
    assert len(picks) == len(truth) == 7
    for depth in ("eight", "sixteen"):
        mrc = picks[f"{depth}_mrc"]
        assert len(mrc) == 6  # every blob found, so the comparison means something
        for suffix in ("png", "tif"):
            same = picks[f"{depth}_{suffix}"]  # identical pixels: identical picks, to the written digit
            np.testing.assert_array_equal(same.x, mrc.x)
            np.testing.assert_array_equal(same.y, mrc.y)
            np.testing.assert_array_equal(same.score, mrc.score)
    jpeg, mrc = picks["eight_jpg"], picks["eight_mrc"]  # lossy by up to one grey level
    assert len(jpeg) == len(mrc)
    order, ref = np.lexsort((jpeg.y, jpeg.x)), np.lexsort((mrc.y, mrc.x))
    np.testing.assert_allclose(jpeg.x[order], mrc.x[ref], atol=0.1)
    np.testing.assert_allclose(jpeg.y[order], mrc.y[ref], atol=0.1)
    np.testing.assert_allclose(jpeg.score[order], mrc.score[ref], atol=0.01)


def test_pick_without_apix_names_the_picture_and_picks_the_rest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _renderings(Path("mics"))
    result = CliRunner().invoke(cli, ["pick", "mics/eight_mrc.mrc", "mics/eight_png.png", "--model",
                                      trained_checkpoint(), "--diameter", str(DIAMETER_A), "-o", "p.star"])
    assert result.exit_code == 3  # one micrograph failed, the other was picked
    assert ("File 'mics/eight_png.png' has no pixel size (a PNG image carries none); give one with --apix"
            in " ".join(result.output.split()))
    assert {micrograph_key(n) for n in read_coordinates("p.star").micrograph} == {"eight_mrc"}


def test_evaluate_takes_sizes_from_pictures_and_asks_for_apix(tmp_path):
    (tmp_path / "truth").mkdir()
    (tmp_path / "mics").mkdir()
    _save(tmp_path / "mics" / "m1.jpg", np.zeros((100, 150), np.uint8))
    (tmp_path / "truth" / "m1.star").write_text(STAR_HEADER + "20 50\n75 50\n")
    (tmp_path / "picks.star").write_text(STAR_HEADER.replace("#2\n", "#2\n_rlnMicrographName #3\n")
                                         + "20 50 m1.jpg\n75 50 m1.jpg\n")

    def evaluate(*extra):
        return CliRunner().invoke(cli, ["evaluate", "--truth", str(tmp_path / "truth"), "--picks",
                                        str(tmp_path / "picks.star"), "--micrographs", str(tmp_path / "mics"),
                                        "--diameter", "40", *extra])

    result = evaluate()
    assert result.exit_code == 1
    assert "m1.jpg' has no pixel size (a JPEG image carries none); give --apix" in result.output
    out = tmp_path / "s.json"
    # A 30 A border at 2 A/px is 15 px: the particle at x = 20 stays, none are dropped at the picture's edge.
    result = evaluate("--apix", "2", "--border", "30", "--json", str(out))
    assert result.exit_code == 0, result.output
    per = json.loads(out.read_text())["pickers"]["picks"]["per_micrograph"]["m1"]
    assert per["n_truth"] == 2 and per["n_matched"] == 2 and per["box_px"] == 20.0
    result = evaluate("--apix", "2", "--border", "50", "--json", str(out))  # 25 px: x = 20 is dropped
    assert json.loads(out.read_text())["pickers"]["picks"]["per_micrograph"]["m1"]["n_truth"] == 1


def test_training_and_finetuning_read_pictures_like_their_mrc(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    truth = _renderings(Path("mics"))
    Path("coords").mkdir()
    for name, centres in truth.items():
        rows = "".join(f"{x:.3f} {y:.3f}\n" for x, y in centres)
        Path("coords", f"{micrograph_key(name)}.star").write_text(STAR_HEADER + rows)
    samples = {s.name: s for s in load_labelled(["mics"], ["coords"], DIAMETER_A, TINY,
                                                 pixel_size_A=PIXEL_SIZE_A)}
    assert len(samples) == 7
    for depth, pictures in (("eight", ("png", "tif")), ("sixteen", ("png", "tif"))):
        mrc = samples[f"{depth}_mrc"]
        for suffix in pictures:
            sample = samples[f"{depth}_{suffix}"]
            assert torch_equal(sample.image, mrc.image) and torch_equal(sample.centres, mrc.centres)
    with pytest.raises(ManifestError) as info:
        load_labelled(["mics/eight_jpg.jpg"], ["coords"], DIAMETER_A, TINY)
    assert info.value.problems == ["training: File 'mics/eight_jpg.jpg' has no pixel size (a JPEG image "
                                   "carries none); give it (pixel_size_A in a manifest, --apix on the "
                                   "command line)"]


def torch_equal(a, b) -> bool:
    return a.shape == b.shape and bool((a == b).all())
