"""The benchmark harness (benchmarks/harness.py) and its entry points: datasets from meta.json, the
pickers' commands, the one scorer with its edge rule, the results format, and the renderings."""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from hydrapick.io import read_coordinates, write_coordinates, write_micrograph
from hydrapick.picks import Picks

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import compare  # noqa: E402
import fewshot  # noqa: E402
import harness as h  # noqa: E402
import renderings  # noqa: E402
import tolerance  # noqa: E402


def make_set(root: Path, name: str = "toy", n: int = 3, diameter_A: float = 40.0, apix: float = 2.0) -> Path:
    """A real-set folder: meta.json with a split, n blank 200 x 300 micrographs, one truth file each."""
    folder = root / name
    (folder / "micrographs").mkdir(parents=True)
    (folder / "truth").mkdir()
    stems = [f"m{i}" for i in range(n)]
    for stem in stems:
        write_micrograph(folder / "micrographs" / f"{stem}.mrc", np.zeros((200, 300), np.float32), apix)
        # Particles at x = 50, 150 and one 5 px from the left edge (inside 10 px, half the 20-px diameter).
        truth = Picks(stem, [50.0, 150.0, 5.0], [100.0, 100.0, 100.0])
        write_coordinates(truth, folder / "truth" / f"{stem}.star")
    meta = {"pixel_size_A": apix, "diameter_A": diameter_A, "split": {"train": stems[:1], "test": stems[1:]}}
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def test_real_sets_read_meta_json_splits_and_a_first_n(tmp_path):
    make_set(tmp_path, "a")
    make_set(tmp_path, "b", diameter_A=60.0, apix=3.0)
    every = h.real_sets(root=tmp_path)
    assert [ds.name for ds in every] == ["a", "b"]
    assert [p.stem for p in every[0].micrographs] == ["m0", "m1", "m2"]
    assert (every[1].diameter_A, every[1].pixel_size_A, every[1].diameter_px) == (60.0, 3.0, 20.0)
    test = h.real_sets(["a"], split="test", micrographs=1, root=tmp_path)
    assert [p.stem for p in test[0].micrographs] == ["m1"]
    with pytest.raises(SystemExit, match="no real set 'c'"):
        h.real_sets(["c"], root=tmp_path)


def test_score_uses_the_labelled_box_and_one_edge_rule_for_truth_and_picks(tmp_path):
    ds = h.real_sets(["toy"], split="test", micrographs=1, root=make_set(tmp_path).parent)[0]
    assert len(ds.truth) == 2  # the particle 5 px from the edge is left out (border = 10 px)
    # Best first: a pick near the edge (dropped, not a false positive), a false pick, then both particles.
    candidates = Picks("m1", [4.0, 250.0, 51.0, 149.0], [100.0, 30.0, 101.0, 100.0], [0.9, 0.8, 0.7, 0.6])
    write_coordinates(candidates, tmp_path / "c.star", combined=True)  # as hydrapick pick writes it
    result = h.Result("x", ds.name, 1, candidates=tmp_path / "c.star", default_threshold=0.75)
    report = h.score(result, ds)
    assert report.n_truth == 2 and report.n_picks_total == 3
    # Precision 0, 1/2, 2/3 at recalls 0, 1/2, 1; all-point interpolation lifts 1/2 to 2/3: AP = 2/3
    # (1/2 * 1/2 + 1/2 * 1/2 = 1/2 if the edge pick were counted as a false pick first).
    assert report.ap == pytest.approx(2 / 3)
    assert result.default_report.n_picks == 1 and result.default_report.precision == 0.0
    row = result.row()
    assert row["ap"] == round(report.ap, 4) and row["precision"] == 0.0 and row["recall"] == 0.0
    assert h.best([h.Result("none", "toy", 1), result]) is result


def test_hydrapick_command_types_the_factor_of_the_labelled_diameter_and_any_flags(tmp_path, monkeypatch):
    ds = h.Dataset("toy", [tmp_path / "a.mrc", tmp_path / "b.mrc"], tmp_path, 150.0, 1.5)
    seen = []
    monkeypatch.setattr(h, "timed", lambda steps, result, cwd=None: seen.append(steps[0][0]) or True)
    result = h.run_hydrapick(ds, tmp_path / "out", diameter_factor=0.8, extra=["--no-calibrate"], tta=True)
    command = seen[-1]
    assert command[command.index("--diameter") + 1] == "120"
    assert command[-2:] == ["--tta", "--no-calibrate"] and command[command.index("--apix") + 1] == "1.5"
    assert result.candidates.name == "hydrapick_candidates.star" and result.settings == {"typed": 0.8}
    h.run_hydrapick(ds, tmp_path / "out", diameter_factor=None)
    assert "--diameter" not in seen[-1]


def test_timed_keeps_the_error_of_a_failing_command(tmp_path):
    ok = h.Result("x", "toy", 2)
    assert h.timed([([sys.executable, "-c", "print('fine')"], "python")], ok)
    assert ok.seconds > 0 and ok.cpu_seconds >= 0 and ok.peak_MB > 1 and not ok.error
    bad = h.Result("x", "toy", 2)
    failing = [sys.executable, "-c", "import sys; sys.exit('no such flag: --nope')"]
    assert not h.timed([(failing, "pick")], bad)
    assert bad.error == "pick failed (exit 1): no such flag: --nope"


def test_relion_outputs_are_gathered_by_micrograph_and_missing_ones_are_empty(tmp_path):
    write_coordinates(Picks("whatever", [10.0, 20.0], [30.0, 40.0], [0.5, 0.2]), tmp_path / "a_autopick.star")
    out = h.gather_relion(tmp_path, ["a.mrc", "b.mrc"], tmp_path / "log.txt")
    picks = read_coordinates(out)
    assert list(picks.micrograph) == ["a", "a"] and list(picks.x) == [10.0, 20.0]
    star = h.micrographs_star(tmp_path / "m.star", ["a.mrc", "b.mrc"], 1.25).read_text()
    assert "opticsGroup1 1 1.250000" in star and star.rstrip().endswith("b.mrc 1")


def test_topaz_scale_a_user_derives_puts_the_particle_near_28_px():
    assert [h.topaz_user_scale(d) for d in (20, 36, 56, 62, 120)] == [1, 1, 2, 2, 4]


def test_variants_parse_names_and_flags_and_replace_the_defaults():
    parser = h.argparse.ArgumentParser()
    h.add_variant_option(parser, {"hydrapick": ""})
    args = parser.parse_args(["--hydrapick-variant", "nocal=--no-calibrate --tta",
                              "--hydrapick-variant", "b="])
    assert h.hydrapick_variants(args, {"hydrapick": ""}) == {"nocal": ["--no-calibrate", "--tta"], "b": []}
    assert h.hydrapick_variants(parser.parse_args([]), {"hydrapick": ""}) == {"hydrapick": []}
    with pytest.raises(SystemExit, match="NAME="):
        h.hydrapick_variants(parser.parse_args(["--hydrapick-variant=--tta"]), {})


def test_results_are_one_json_file_and_a_table_with_dashes_for_missing_values(tmp_path):
    keys = ("set", "picker", "ap", "best_f1", "precision", "recall", "s_per_mic")
    rows = [dict(zip(keys, values, strict=True)) for values in (
        ("a", "p", 0.4, 0.5, 0.5, 0.5, 1), ("b", "p", 0.6, 0.7, 0.5, 0.5, 3),
        ("a", "q", 0.9, 0.9, 0.9, 0.9, 1), ("b", "q", None, None, None, None, None))]
    means = {m["picker"]: m for m in compare.means(rows)}
    assert means["p"]["ap"] == pytest.approx(0.5) and means["p"]["s_per_mic"] == pytest.approx(2)
    assert means["q"]["ap"] is None


def test_the_oracle_searches_0_6_to_1_7_in_steps_of_at_most_0_1():
    assert tolerance.ORACLE[0] == 0.6 and tolerance.ORACLE[-1] == 1.7
    assert max(np.diff(tolerance.ORACLE)) <= 0.1 + 1e-9
    assert [tolerance.label(f) for f in tolerance.TYPED] == ["0.7x", "0.8x", "1x", "1.25x", "1.5x", "none"]


def test_binned_rendering_halves_the_truth_and_doubles_the_pixel_size(tmp_path):
    ds = h.real_sets(["toy"], split="test", root=make_set(tmp_path / "data").parent)[0]
    binned = renderings.render(ds, next(r for r in renderings.RENDERINGS if r.name == "bin2"),
                               tmp_path / "bin2", tmp_path / "no-topaz")
    assert binned.pixel_size_A == 4.0 and binned.diameter_A == ds.diameter_A and binned.diameter_px == 10.0
    assert binned.shapes == {"m1": (100, 150), "m2": (100, 150)}
    truth = read_coordinates(binned.truth_dir / "m1.star")
    np.testing.assert_allclose(truth.x, [(50 - 0.5) / 2, (150 - 0.5) / 2, (5 - 0.5) / 2])
    with pytest.raises(RuntimeError, match="topaz_setup.sh"):
        renderings.render(ds, next(r for r in renderings.RENDERINGS if r.name == "topaz-denoise"),
                          tmp_path / "tz", tmp_path / "no-topaz")


def test_fewshot_subsets_keep_a_share_of_each_micrographs_labels_by_seed():
    labels = Picks(["a"] * 10 + ["b"] * 20, np.arange(30.0), np.zeros(30))
    keys = lambda picks: list(picks.micrograph)  # noqa: E731
    first = fewshot.subset(labels, 0.3, 0)
    assert keys(first).count("a") == 3 and keys(first).count("b") == 6
    assert np.array_equal(first.x, fewshot.subset(labels, 0.3, 0).x)
    assert not np.array_equal(first.x, fewshot.subset(labels, 0.3, 1).x)
    assert set(first.x) <= set(labels.x) and len(set(first.x)) == 9
    assert fewshot.subset(labels, 1.0, 5) is labels
    assert sorted(keys(fewshot.subset(labels, 0.01, 0))) == ["a", "b"]  # at least one each


def test_fewshot_finetunes_on_the_train_labels_calibrated_on_valid_and_topaz_labels_fit_its_image(
        tmp_path, monkeypatch):
    root = make_set(tmp_path / "data", n=3).parent
    train, test = (h.real_sets(["toy"], split=s, root=root)[0] for s in ("train", "test"))
    valid = h.Dataset("toy", test.micrographs[:1], test.truth_dir, test.diameter_A, test.pixel_size_A)
    split = fewshot.Split("toy", train, valid, test)
    assert len(split.labels) == 3 and set(split.labels.micrograph) == {"m0"}  # no edge rule on labels
    seen = []
    monkeypatch.setattr(h, "timed", lambda steps, result, cwd=None: seen.append(steps[0][0]) or True)
    args = argparse.Namespace(steps=7, threads=None, finetune_flags=["--lr", "1"])
    _, model = fewshot.run_finetune(split, fewshot.subset(split.labels, 0.3, 0), tmp_path, "f", True, args)
    command = seen[-1]
    assert command[command.index("--valid-micrographs") + 1] == str(test.micrographs[0])
    assert command[-5:] == ["--steps", "7", "--sparse", "--lr", "1"] and model == tmp_path / "f.pt"
    assert len(read_coordinates(tmp_path / "f_labels" / "m0.star")) == 1
    assert len(read_coordinates(tmp_path / "valid_labels" / "m1.star")) == 3
    # Topaz indexes a mask of the downsampled image (n // s a side) by the labels: none may fall outside.
    edge = Picks("m0", [299.0, 100.0], [199.0, 51.0])
    small = fewshot.topaz_labels(edge, train, 2)
    np.testing.assert_allclose(small.x, [149.0, 50.0])
    np.testing.assert_allclose(small.y, [99.0, 25.5])


def test_fewshot_chooses_topaz_epoch_by_test_auprc_and_checks_the_criteria(tmp_path):
    log = tmp_path / "training.txt"
    log.write_text("epoch\titer\tsplit\tloss\tprecision\tauprc\n1\t1\ttrain\t0.3\t0.4\t-\n"
                   "1\t2\ttest\t0.1\t0.2\t0.5\n2\t3\ttrain\t0.2\t0.5\t-\n2\t4\ttest\t0.1\t0.2\t0.7\n"
                   "3\t5\ttest\t0.1\t0.2\t0.6\n")
    assert fewshot.best_epoch(log) == (2, 0.7)
    rows = [{"set": "s", "arm": arm, "ap": ap} for arm, ap in
            [("zero-shot", 0.70), ("full", 0.80), ("topaz", 0.85), ("frac30", 0.78), ("frac30", 0.76),
             ("frac30 sparse", 0.70), ("frac10", 0.69), ("frac10 sparse", None)]]
    (row,) = fewshot.criteria(rows)
    assert row["full_gain"] == "yes" and row["full_over_topaz"] == "NO"
    assert row["frac30"] == pytest.approx(0.77) and row["frac30_seeds"] == 2 and row["frac30_ok"] == "yes"
    assert row["frac30_sparse_ok"] == "NO" and row["frac10_ok"] == "NO"
    assert row["frac10_sparse"] is None and row["frac10_sparse_ok"] is None
