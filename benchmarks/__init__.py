"""condor-annex benchmarks (issue 4): ``python -m benchmarks`` or ``make bench``.

See :mod:`benchmarks.__main__` for the sections and the repetitions chosen; results go to
``benchmarks/results/<timestamp>.json`` and ``latest.json``.
"""
