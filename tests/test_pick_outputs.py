"""Output formats of pick runs (the files themselves are tested end to end in test_picking.py)."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from hydrapick.picking.outputs import SETTINGS_FILE, output_format


def test_output_format_from_name(tmp_path):
    assert output_format("a.star") == "star"
    assert output_format("a.txt") == "topaz"
    assert output_format("a.cs") == "cs"
    assert output_format("AutoPick/job010") == "relion"
    assert output_format("picks", "box") == "box"
    with pytest.raises(ValueError, match="one micrograph"):
        output_format("a.box")
    with pytest.raises(ValueError, match="unknown output format"):
        output_format("a.star", "xml")


# --- a job folder records its settings; continuing, outputs and earlier runs (issue 36) --------------------

@pytest.fixture
def mics(tmp_path, monkeypatch):
    """Movies/mic_00{0,1,2}.mrc, 4 blobs each; returns their paths."""
    from test_picking import write_blob_micrographs

    monkeypatch.chdir(tmp_path)
    return sorted(str(Path(p)) for p in write_blob_micrographs(Path("Movies"), 3, particles=4, seed=3))


def options(**changes):
    from test_picking import DIAMETER_A, trained_checkpoint

    # Picked at the typed diameter: these tests are about the folder's record, not the scale calibration
    # (which records its own scale and checks it; test_calibrate.py).
    return {"model": trained_checkpoint(), "diameter_A": DIAMETER_A, "device": "cpu", "calibrate": False,
            **changes}


def test_a_job_folder_records_its_settings_and_refuses_a_continuation_that_differs(mics):
    from hydrapick.checkpoint import load_checkpoint, save_checkpoint
    from hydrapick.picking import pick

    pick(mics[:2], "job", **options())
    recorded = json.loads(Path("job", SETTINGS_FILE).read_text())
    assert {"model", "head", "diameter_A", "calibrated_scale", "threshold", "scales", "tta"} <= set(recorded)
    assert recorded["head"] == "generic" and recorded["scales"] == [1.0] and recorded["tta"] is False
    with pytest.raises(ValueError) as refused:
        pick(mics, "job", skip_existing=True, **options(threshold=0.3, scales="1,1.1"))
    message = str(refused.value)
    assert "threshold 0.2 there, 0.3 now" in message and "scales 1 there, 1,1.1 now" in message
    assert "tta" not in message and "new folder" in message and SETTINGS_FILE in message
    with pytest.raises(ValueError, match="72.*80"):  # another diameter (named by the scale's record first)
        pick(mics, "job", skip_existing=True, **options(diameter_A=80.0))
    assert not Path("job/Movies/mic_002_autopick.star").exists()  # refused before picking anything
    # The same model from another file is the same model: the run continues.
    shutil.copy(options()["model"], "copy.pt")
    report = pick(mics, "job", skip_existing=True, **options(model="copy.pt"))
    assert (report.n_skipped, report.n_picked) == (2, 1)
    # Other weights under the same head name are another model.
    net, meta = load_checkpoint("copy.pt")
    with torch.no_grad():
        next(net.parameters()).add_(0.01)
    save_checkpoint("other.pt", net, meta)
    with pytest.raises(ValueError, match="model"):
        pick(mics, "job", skip_existing=True, **options(model="other.pt", tta=True))


@pytest.mark.parametrize("kind", ["star list", "text list", "micrograph", "job index"])
def test_an_output_that_is_an_input_is_refused(mics, kind):
    from hydrapick.picking import pick

    if kind == "star list":
        Path("mics.star").write_text("data_micrographs\nloop_\n_rlnMicrographName\n" + "\n".join(mics) + "\n")
        inputs, output, fmt = ["mics.star"], "mics.star", None
    elif kind == "text list":
        Path("todo.txt").write_text("\n".join(mics) + "\n")
        inputs, output, fmt = ["todo.txt"], "todo.txt", None
    elif kind == "micrograph":
        inputs, output, fmt = mics[:2], mics[1], "star"
    else:
        pick(mics, "job", **options())
        inputs, output, fmt = ["job/autopick.star"], "job", None
    target = Path(output) / "autopick.star" if kind == "job index" else Path(output)
    before = target.read_bytes()
    with pytest.raises(ValueError, match="is also an input"):
        pick(inputs, output, format=fmt, **options())
    assert target.read_bytes() == before


def test_a_second_plain_run_into_a_job_folder_keeps_the_earlier_micrographs(mics):
    import starfile

    from hydrapick.io import read_coordinates
    from hydrapick.picking import pick

    first = pick(mics[:2], "job", **options())
    second = pick(mics[2:], "job", **options())
    index = starfile.read("job/autopick.star")
    assert list(index["rlnMicrographName"]) == mics  # earlier entries kept, in their order
    picks = read_coordinates("job", "relion")
    assert len(picks) == len(first.picks) + len(second.picks) and set(picks.micrographs()) == set(mics)
    assert set(read_coordinates("job/candidates.star", "star").micrographs()) == set(mics)
    # Other settings would mix picks made two ways in one index: refused, saying how to re-pick.
    with pytest.raises(ValueError, match="not in this run"):
        pick(mics[2:], "job", **options(threshold=0.9))
    # Re-picking every earlier micrograph with new settings replaces them all.
    again = pick(mics, "job", **options(threshold=0.9))
    assert json.loads(Path("job", SETTINGS_FILE).read_text())["threshold"] == 0.9
    assert len(read_coordinates("job", "relion")) == len(again.picks)
