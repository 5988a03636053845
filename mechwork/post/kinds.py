"""How each result block renders: a scratch dashboard page built with the dashboard's own sections.

Each renderer takes the model's :class:`~mechwork.post.blocks.BlockContext` and the block's checked arguments,
calls the analysis the dashboard and the CLI call, adds it to a scratch :class:`~mechwork.dashboard.page.Page`
with the existing adders, and returns that page's blocks. Torch and plotly are imported inside the functions.

Example::

    >>> callable(attention)
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from mechwork.dashboard.page import Block
    from mechwork.post.blocks import BlockContext


def _todo(ctx: BlockContext, args: Mapping[str, Any]) -> list[Block]:
    raise NotImplementedError


attention = fourier = key_frequencies = neuron_clusters = progress = head_detectors = _todo
patching = dla = logit_lens = circuit = sae_features = training_curves = result = _todo
