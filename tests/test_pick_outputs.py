"""Output formats of pick runs (the files themselves are tested end to end in test_picking.py)."""

import pytest

from hydrapick.picking.outputs import output_format


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
