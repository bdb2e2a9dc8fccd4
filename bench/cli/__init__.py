"""Entry points: ``salbench`` (Hydra, :mod:`bench.cli.main`), ``salbench-leaderboard`` (:mod:`bench.cli.leaderboard`)
and ``salbench-check`` (:mod:`bench.cli.check`). Nothing is imported here, so that the reporting commands load
neither torch nor Hydra."""
