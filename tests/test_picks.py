import numpy as np
import pytest

from hydrapick.picks import Picks, micrograph_key


def test_micrograph_key_strips_dirs_extensions_and_picker_suffixes():
    assert micrograph_key("Movies/a/mic_001.mrc") == "mic_001"
    assert micrograph_key("mic_001_autopick.star") == "mic_001"
    assert micrograph_key("mic_001") == "mic_001"


def test_picks_select_group_and_flip():
    p = Picks(["a", "a", "b"], [1, 2, 3], [4, 5, 6], [0.9, 0.1, 0.5])
    assert len(p) == 3 and p.micrographs() == ["a", "b"]
    groups = dict(p.by_micrograph())
    assert groups["a"].x.tolist() == [1, 2]
    assert p.above(0.5).x.tolist() == [1, 3]
    assert p.flip_y(10).y.tolist() == [5, 4, 3]
    assert np.isnan(p.diameter_px).all()
    assert p.sorted_by_score().score.tolist() == [0.9, 0.5, 0.1]


def test_picks_reject_mismatched_lengths():
    with pytest.raises(ValueError, match="score"):
        Picks("a", [1, 2], [1, 2], [0.1, 0.2, 0.3])
