"""The HydraPicker network: shared body, SSD-style heads, and the multi-head model."""

from .body import Body, PairedConv, ResidualBlock
from .head import NUM_OUTPUTS, Head, head_strides, prior_bias
from .hydra import GENERIC_HEAD, HydraPicker, body_tails_in, check_head_name

__all__ = [
    "GENERIC_HEAD", "NUM_OUTPUTS", "Body", "Head", "HydraPicker", "PairedConv", "ResidualBlock",
    "body_tails_in", "check_head_name", "head_strides", "prior_bias",
]
