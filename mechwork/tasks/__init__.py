"""Toy tasks as kits: the data a toy transformer is trained and probed on, and what mechwork knows of it.

One module per kit (see :mod:`mechwork.kit` for what a kit provides):

* :mod:`mechwork.tasks.modadd` -- :class:`ModularArithmetic`, every pair ``(a, b)`` as ``[a, b, =]``
  with the label ``(a op b) mod p`` read at the last position (Nanda et al. 2023);
* :mod:`mechwork.tasks.induction` -- :class:`InductionTask`, random sequences in which a segment of
  random length is repeated at a random offset.

Each task is a frozen dataclass that knows its vocabulary, context length and hands out
:class:`Batch` es of tokens, next-token targets and a mask of the positions the loss counts
through one seam, ``task.batch(split, step)``. This package re-exports both kits' names;
:func:`standard_probe` and :func:`task_from_dict` go through the kit registry, so they work for a
user's kit too.

Why tasks sit above :mod:`mechwork.analysis`: a kit's ``analyse()`` bundles the analyses that apply to
its task, and analyses take tasks by duck typing.

Example::

    >>> from mechwork.tasks import ModularArithmetic, standard_probe, task_from_dict
    >>> task = ModularArithmetic(p=7, op="add", train_frac=0.5, seed=0)
    >>> task_from_dict(task.to_dict()) == task
    True
    >>> standard_probe(task, n=4).clean.shape
    torch.Size([4, 3])
"""

from __future__ import annotations

from typing import Any

from mechwork.kit import Batch, Preset, Probe, Task, kit_of, task_from_dict
from mechwork.limits import OPS, is_prime
from mechwork.tasks.induction import InductionTask
from mechwork.tasks.modadd import ModularArithmetic, Op

__all__ = [
    "OPS",
    "Batch",
    "InductionTask",
    "ModularArithmetic",
    "Op",
    "Preset",
    "Probe",
    "Task",
    "is_prime",
    "standard_probe",
    "task_from_dict",
]


def standard_probe(task: Task, n: int = 8, seed: int = 0, **kw: Any) -> Probe:
    """The default clean/corrupted prompts and metric of ``task``, from its kit.

    Modular arithmetic takes ``shift`` (corrupt ``b`` to ``b + shift``), induction ``half`` (the
    length of each half of ``[r, r]``); see each kit's ``probe``.
    """
    return kit_of(task).probe(task, n=n, seed=seed, **kw)
