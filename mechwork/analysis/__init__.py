"""Analyses: each a function from a model (and its inputs) to a :class:`~mechwork.results.Result`.

Fourier features and the trig-identity fit of grokked modular arithmetic, progress measures over a run's
checkpoints, attention patterns and head detectors, activation and attribution patching, ablations,
metrics and the clock/pizza symmetry. Analyses never train, never import :mod:`mechwork.dashboard` or
:mod:`mechwork.studies`, and take tasks through their protocol (duck typing), never a concrete kit.

Example::

    >>> from mechwork.analysis.metrics import accuracy
"""
