"""Scripts behind published figures: the label audit, the crowding table, the model-scale copy of a
checkpoint and the corpus's places to ignore."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hydrapick.checkpoint import load_checkpoint, save_checkpoint
from hydrapick.config import ModelConfig
from hydrapick.io import read_coordinates
from hydrapick.model import HydraPicker
from hydrapick.picks import Picks
from hydrapick.simulation.dataset import write_particle_table

ROOT = Path(__file__).resolve().parents[1]


def load_script(relative: str):
    # Scripts of one folder import each other, as they do when run from the command line.
    folder = str((ROOT / relative).parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(Path(relative).stem, ROOT / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_label_audit_counts_only_places_every_picker_marks():
    audit = load_script("benchmarks/label_audit.py")
    box = 20.0
    truth = Picks("m.mrc", [50.0, 150.0, 250.0], [50.0, 50.0, 50.0])
    # Both pickers rank an unlabelled place (400, 300) among their best 3; only picker a marks (600, 300).
    a = Picks("m", [51.0, 400.0, 600.0, 150.0], [50.0, 300.0, 300.0, 52.0], [0.9, 0.8, 0.7, 0.1])
    b = Picks("m_autopick", [403.0, 49.0, 250.0, 600.0], [302.0, 50.0, 50.0, 300.0], [5.0, 4.0, 3.0, 1.0])
    places = audit.unlabelled_places(truth, {"a": a, "b": b}, box)
    assert list(places) == ["m"]
    np.testing.assert_allclose(places["m"], [[401.5, 301.0]])
    completed = audit.with_places(truth, places)
    assert len(completed) == 4 and set(completed.micrograph) == {"m.mrc"}


def test_rescaled_checkpoint_keeps_weights_and_changes_the_particle_size(tmp_path):
    rescale = load_script("recipes/generic/rescale.py")
    model = HydraPicker(ModelConfig.light(stem_stride=4))
    source = save_checkpoint(tmp_path / "a.pt", model, {"thresholds": {"generic": 0.4}})
    out = rescale.rescale(source, 48, tmp_path / "b.pt")
    copy, meta = load_checkpoint(out)
    assert copy.config.particle_diameter_px == 48.0
    assert meta["thresholds"] == {"generic": 0.4}
    assert meta["rescaled_from"]["particle_diameter_px"] == 64.0
    for (name, x), (_, y) in zip(model.state_dict().items(), copy.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
    with pytest.raises(SystemExit, match="outside"):
        rescale.rescale(source, 20, tmp_path / "c.pt")


def test_label_audit_scores_another_picks_file_against_both_truths(tmp_path, capsys):
    import json

    from hydrapick.io import write_coordinates, write_micrograph

    audit = load_script("benchmarks/label_audit.py")
    write_micrograph(tmp_path / "m.mrc", np.zeros((400, 700), np.float32), 1.0)
    truth = Picks("m.mrc", [50.0, 150.0, 250.0], [50.0, 50.0, 50.0])
    a = Picks("m.mrc", [51.0, 400.0, 600.0, 150.0], [50.0, 300.0, 300.0, 52.0], [0.9, 0.8, 0.7, 0.1])
    b = Picks("m.mrc", [403.0, 49.0, 250.0, 600.0], [302.0, 50.0, 50.0, 300.0], [5.0, 4.0, 3.0, 1.0])
    # Ranks the unlabelled place (400, 300) first, then the three labelled particles.
    other = Picks("m.mrc", [400.0, 50.0, 150.0, 250.0], [300.0, 50.0, 50.0, 50.0], [0.9, 0.8, 0.7, 0.6])
    files = {}
    for name, picks in (("truth", truth), ("a", a), ("b", b), ("other", other)):
        files[name] = tmp_path / name  # a folder of per-micrograph files, as pickers write them
        files[name].mkdir()
        write_coordinates(picks, files[name] / "m.star")
    (tmp_path / "summary.json").write_text(json.dumps({
        "dataset": "toy", "micrographs": [str(tmp_path / "m.mrc")], "truth": str(files["truth"]),
        "box_px": 20.0, "border_A": None, "pixel_size_A": 1.0,
        "pickers": {n: {"available": True, "output": str(files[n])} for n in ("a", "b")}}))
    assert audit.main([str(tmp_path), "--also", f"other={files['other']}"]) == 0
    rows = {line.split()[0]: [float(v) for v in line.split()[1:]]
            for line in capsys.readouterr().out.splitlines()[2:]}
    assert set(rows) == {"a", "b", "other"}
    ap, _, ap_completed, best_f1_completed = rows["other"]
    assert ap < 0.9 and ap_completed == pytest.approx(1.0) and best_f1_completed == pytest.approx(1.0)
    with pytest.raises(SystemExit, match="NAME=PICKS"):
        audit.main([str(tmp_path), "--also", str(files["other"])])


def test_widened_stem_picks_exactly_as_the_source_until_trained(tmp_path):
    widen = load_script("recipes/generic/widen_stem.py")
    torch.manual_seed(0)
    model = HydraPicker(ModelConfig.light(stem_stride=4)).eval()
    source = save_checkpoint(tmp_path / "a.pt", model, {"thresholds": {"generic": 0.4}})
    copy, meta = load_checkpoint(widen.widen_stem(source, 5, tmp_path / "b.pt"))
    assert copy.config.stem_kernel == 5 and copy.body.stem[0].kernel_size == (5, 5)
    assert meta["thresholds"] == {"generic": 0.4} and meta["stem_widened_from"]["stem_kernel"] == 3
    x = torch.randn(1, 1, 96, 112)
    with torch.no_grad():
        torch.testing.assert_close(copy.eval()(x), model(x), rtol=0, atol=0)
    with pytest.raises(SystemExit, match="odd and wider"):
        widen.widen_stem(source, 3, tmp_path / "c.pt")


def test_averaged_heads_mean_the_offsets_and_the_probabilities_not_the_logits():
    ensemble = load_script("benchmarks/adapt_ensemble.py")
    a = torch.tensor([[0.2, -0.4, 0.0], [1.0, 1.0, 4.0]])
    b = torch.tensor([[0.4, 0.0, 0.0], [0.0, -1.0, -4.0]])
    out = ensemble.averaged_outputs([a, b])
    torch.testing.assert_close(out[:, :2], torch.tensor([[0.3, -0.2], [0.5, 0.0]]))
    # sigmoid(4) and sigmoid(-4) average to exactly 0.5 (logit 0); averaging logits would agree here, so
    # the first anchor's 0.5 and a lopsided pair tell the two apart.
    torch.testing.assert_close(out[:, 2], torch.tensor([0.0, 0.0]), atol=1e-6, rtol=0)
    lopsided = ensemble.averaged_outputs([torch.tensor([[0.0, 0.0, 6.0]]), torch.tensor([[0.0, 0.0, 0.0]])])
    p = (torch.sigmoid(torch.tensor(6.0)) + 0.5) / 2
    torch.testing.assert_close(lopsided[0, 2], torch.log(p / (1 - p)))
    assert abs(float(lopsided[0, 2]) - 3.0) > 0.5  # the mean logit would be 3


def test_crowding_places_each_particle_by_its_matched_pick():
    crowding = load_script("benchmarks/crowding.py")
    truth = Picks("m", [50.0, 60.0, 300.0, 500.0], [50.0, 50.0, 300.0, 500.0])
    near = crowding.neighbour_distance(truth)
    np.testing.assert_allclose(near, [10.0, 10.0, np.hypot(200, 200), np.hypot(200, 200)])
    # Picks ranked: on particle 3, a false one, on particle 0; particles 1 and 2 get none.
    picks = Picks("m.mrc", [500.0, 900.0, 51.0], [501.0, 900.0, 50.0], [0.9, 0.8, 0.3])
    score, place = crowding.score_and_rank(truth, picks, 20.0)
    np.testing.assert_allclose(score, [0.3, np.nan, np.nan, 0.9])
    # Places in labelled particles of the micrograph (4): first pick 0, third pick 2 / 4.
    np.testing.assert_allclose(place, [0.5, np.inf, np.inf, 0.0])


def test_aggregate_places_are_written_and_named_in_the_manifest(tmp_path):
    script = load_script("recipes/generic/aggregate_places.py")
    folder = tmp_path / "cache" / "s1"
    (folder / "coordinates").mkdir(parents=True)
    (folder / "micrographs").mkdir()
    table = {"x_px": [10.0, 20.0, 30.0], "y_px": [5.0, 6.0, 7.0], "psi_deg": [0.0, 0.0, 0.0],
             "view": [1, 2, 3], "aggregate": [-1, 0, 0], "reason": ["", "aggregate", "aggregate"]}
    (folder / "particles").mkdir()
    write_particle_table(folder / "particles" / "sim_00000.star", table)
    write_particle_table(folder / "particles" / "sim_00001.star", {**table, "reason": ["", "", "edge"]})
    corpus = tmp_path / "corpus.toml"
    corpus.write_text("# the corpus\n[datasets.s1]\nmicrographs = \"cache/s1/micrographs/*.mrc\"\n"
                      "coordinates = \"cache/s1/coordinates\"\ndiameter_A = 100.0\n")
    assert script.main([str(corpus), "-o", str(tmp_path / "out.toml")]) == 0
    places = read_coordinates(folder / "aggregates" / "sim_00000.star")
    np.testing.assert_allclose(np.stack([places.x, places.y], 1), [[20.0, 6.0], [30.0, 7.0]])
    assert len(read_coordinates(folder / "aggregates" / "sim_00001.star")) == 0
    text = (tmp_path / "out.toml").read_text()
    assert 'ignore_coordinates = "cache/s1/aggregates"' in text and "# the corpus" in text


def test_log_fusion_finds_dark_blobs_and_adds_ranks_per_micrograph():
    fusion = load_script("benchmarks/log_fusion.py")
    yy, xx = np.mgrid[:256, :256].astype(np.float32)
    image = torch.from_numpy(-np.exp(-((xx - 100) ** 2 + (yy - 160) ** 2) / (2 * 12.0 ** 2)))
    response = fusion.log_response(image, 48.0)
    at = fusion.responses_at(response, np.array([100.0, 30.0]), np.array([160.0, 30.0]))
    assert at[0] > 0.1 and at[0] > 10 * abs(at[1])  # on the blob, not on the flat background
    picks = Picks(np.array(["a", "a", "b"], dtype=object), [0.0, 1.0, 2.0], [0.0, 0.0, 0.0], [0.5, 0.4, 0.2])
    fused = fusion.fuse(picks, np.array([1.0, 3.0, -5.0]), 0.5)
    np.testing.assert_allclose(fused.score, [0.5 + 0.5 * 0.25, 0.4 + 0.5 * 0.75, 0.2 + 0.5 * 0.5])
    assert fusion.separation(np.array([0.9, 0.6, 0.1, 0.05]), np.array([2.0, 1.0, 1.0, 0.0])) == 0.875
