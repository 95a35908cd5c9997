import pytest
import torch

import hydrapick
from hydrapick.checkpoint import FORMAT, CheckpointError, load_checkpoint, save_checkpoint
from hydrapick.config import ModelConfig
from hydrapick.model import HydraPicker

TINY = ModelConfig(stem_stride=2, body_channels=8, body_blocks=1, group_norm_groups=4,
                   head_channels=(8, 8, 8, 8), particle_diameter_px=48.0)


def _model():
    torch.manual_seed(0)
    return HydraPicker(TINY, ["ds1", "ds2"]).eval()


def test_round_trip_restores_outputs_and_metadata(tmp_path):
    model = _model()
    meta = {"thresholds": {"generic": 0.4, "ds1": 0.5}, "diameters_A": {"ds1": 150.0, "ds2": None},
            "training": {"epochs": 3, "datasets": ["ds1", "ds2"]}, "seed": 7, "command": "hydrapick train"}
    path = save_checkpoint(tmp_path / "m.pt", model, meta)
    loaded, got = load_checkpoint(path)
    assert loaded.config == TINY and loaded.head_names == ["ds1", "ds2"] and not loaded.training
    assert got["thresholds"] == meta["thresholds"] and got["diameters_A"] == meta["diameters_A"]
    assert got["training"] == meta["training"] and got["seed"] == 7
    assert got["hydrapick_version"] == hydrapick.__version__ and got["format_version"] == 1
    assert got["heads"] == ["ds1", "ds2"] and "created" in got
    x = torch.randn(1, 1, 64, 80)
    with torch.no_grad():
        for head in ("generic", "ds1", "ds2"):
            assert torch.equal(loaded(x, head=head), model(x, head=head))
    # Plain data only: loadable with weights_only=True.
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == FORMAT and raw["dtype"] == "float32"
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left behind


def test_half_precision_checkpoint(tmp_path):
    model = _model()
    full = save_checkpoint(tmp_path / "full.pt", model, {})
    half = save_checkpoint(tmp_path / "half.pt", model, {}, half=True)
    assert half.stat().st_size < full.stat().st_size
    raw = torch.load(half, weights_only=True)
    assert raw["dtype"] == "float16"
    assert all(t.dtype == torch.float16 for t in raw["state_dict"].values() if t.is_floating_point())
    loaded, _ = load_checkpoint(half)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-2)


def test_metadata_must_be_plain(tmp_path):
    with pytest.raises(TypeError, match=r"metadata\.bad"):
        save_checkpoint(tmp_path / "m.pt", _model(), {"bad": torch.zeros(1)})
    assert not (tmp_path / "m.pt").exists()


def test_foreign_files_are_rejected(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="notes.txt: not a hydrapick checkpoint"):
        load_checkpoint(text)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(CheckpointError, match="other.pt: not a hydrapick checkpoint"):
        load_checkpoint(other)
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "missing.pt")


def test_newer_format_version_is_rejected(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", _model(), {})
    raw = torch.load(path, weights_only=True)
    raw["format_version"] = 99
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match="format version 99 is newer"):
        load_checkpoint(path)


def test_weights_that_do_not_fit_the_config_are_rejected(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", _model(), {})
    raw = torch.load(path, weights_only=True)
    raw["metadata"]["model_config"]["body_channels"] = 16
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(path)
    raw["metadata"]["model_config"]["no_such_field"] = 1
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match="no_such_field"):
        load_checkpoint(path)


def test_failed_write_leaves_the_old_file_intact(tmp_path, monkeypatch):
    import hydrapick.checkpoint as ckpt

    path = save_checkpoint(tmp_path / "m.pt", _model(), {"seed": 1})
    before = path.read_bytes()

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, _model(), {"seed": 2})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_load_to_a_named_device_and_plain_types_only(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", _model(), {"thresholds": {"generic": 0.5}, "tags": ("a", "b")})
    model, meta = load_checkpoint(path, map_location="cpu")
    assert next(model.parameters()).device.type == "cpu"
    assert meta["tags"] == ["a", "b"]  # tuples are stored as lists


def test_input_lowpass_travels_with_the_model_and_older_files_load_without_it(tmp_path):
    import dataclasses

    model = HydraPicker(dataclasses.replace(TINY, input_lowpass_px=1.0), ["ds1"])
    loaded, meta = load_checkpoint(save_checkpoint(tmp_path / "m.pt", model))
    assert loaded.config.input_lowpass_px == 1.0 and meta["model_config"]["input_lowpass_px"] == 1.0
    # A file written before the field existed has no such key: it loads as "no low-pass".
    raw = torch.load(tmp_path / "m.pt", weights_only=True)
    del raw["metadata"]["model_config"]["input_lowpass_px"]
    torch.save(raw, tmp_path / "old.pt")
    assert load_checkpoint(tmp_path / "old.pt")[0].config.input_lowpass_px == 0.0
