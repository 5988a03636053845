"""Studies: the experiments of the project's papers, built on the public API (sweeps, lottery tickets,
width and scaling laws, the digits and parity tasks, stability and curvature).

A study module may use everything below it (core, tasks, analysis, dashboard); nothing outside
:mod:`mechwork.studies` and :mod:`mechwork.cli` imports it.

Example::

    >>> from mechwork.studies.study import study_args
"""
