"""The experiments: :mod:`~bench.experiments.invariance` (input invariance),
:mod:`~bench.experiments.model_randomization` and :mod:`~bench.experiments.label_randomization`. Each returns a
result whose ``table`` is the long results table (:mod:`bench.core.results`). Nothing is imported here (a function
named like its module would hide the module)."""
