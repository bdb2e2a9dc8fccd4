"""Input-invariance machinery: shifts of the input, bias-compensated twin networks, tie-stable max-pooling."""

from bench.twins.build import BiasMapConv2d, TwinPremiseError, check_twin, first_layer, shifted_twin, twin_error
from bench.twins.shifts import KINDS, adversarial_image, checkerboard, custom, make_shift, mean_shift, target_picture
from bench.twins.ties import TieStableMaxPool2d, stable_ties

__all__ = ["BiasMapConv2d", "KINDS", "TieStableMaxPool2d", "TwinPremiseError", "adversarial_image", "check_twin",
           "checkerboard", "custom", "first_layer", "make_shift", "mean_shift", "shifted_twin", "stable_ties",
           "target_picture", "twin_error"]
