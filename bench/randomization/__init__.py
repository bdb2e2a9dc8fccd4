"""Model-randomization engine: :func:`units` cuts a model into the paper's "layers" in execution order,
:func:`randomized` re-initializes them stage by stage (cascading, bottom-up, independent)."""

from bench.randomization.reinit import MODES, InitFn, randomized, unit_seed
from bench.randomization.units import Unit, check_partition, units

__all__ = ["MODES", "InitFn", "Unit", "check_partition", "randomized", "unit_seed", "units"]
