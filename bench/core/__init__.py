"""The harness's base layer: data, models, training, explaining, the score registry and scoring, the results table.

Nothing is imported here: :mod:`bench.core.scores` and :mod:`bench.core.results` are torch-free and are read by
the reporting commands without loading torch.
"""
