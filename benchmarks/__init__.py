"""The benchmarks: speed and accuracy measurements against baselines run in the same process
(``make bench``, ``xai bench``). They live beside the package, not in it (nothing here ships
in the wheel): the numbers they produce are in ``docs/performance.md``."""
