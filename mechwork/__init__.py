"""mechwork: train toy transformers, open them up, publish what you find.

``import mechwork`` is cheap: torch, TransformerLens and plotly load only when
an attribute that needs them is first used.

    >>> import mechwork
    >>> model = mechwork.load("modadd-113")                      # embedded, grokked
    >>> logits, cache = model.run_with_cache(mechwork.preset("modadd-113").task.tokens[:8])

``mechwork.load`` takes a preset name, a run directory, a directory saved with ``save_pretrained`` (booted
offline through TransformerLens's bridge, with its tokenizer if it has one) or a ``TransformerBridge``;
:func:`mechwork.tokenize` turns text (through the model's tokenizer) or token ids into checked prompts.

A new task is a kit (:mod:`mechwork.kit`): build a ``mechwork.Kit`` in one file and ``mechwork.register`` it.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from mechwork.errors import MechworkError

__version__ = "0.1.0"
__all__ = [
    "InductionTask",
    "Kit",
    "MechworkError",
    "ModularArithmetic",
    "Run",
    "ToyConfig",
    "TrainConfig",
    "build_model",
    "load",
    "preset",
    "register",
    "tokenize",
    "train",
]

_LAZY = {
    "Kit": "mechwork.kit",
    "register": "mechwork.kit",
    "InductionTask": "mechwork.tasks",
    "ModularArithmetic": "mechwork.tasks",
    "ToyConfig": "mechwork.models",
    "build_model": "mechwork.models",
    "preset": "mechwork.models",
    "Run": "mechwork.runs",
    "load": "mechwork.runs",
    "tokenize": "mechwork.prompts",
    "TrainConfig": "mechwork.training",
    "train": "mechwork.training",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mechwork' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
