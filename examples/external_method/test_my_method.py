"""How a user gates their own method in their CI (run with pytest from this folder)."""

from my_method import abs_gradient, input_times_gradient

from bench.testing import check_method


def test_abs_gradient_passes_the_sanity_suite():
    check_method(abs_gradient)  # raises MethodCheckError with a readable report on failure


def test_input_times_gradient_behaves_as_documented():
    # what a method is expected to do can be stated: x * gradient follows the input shift, and its map stays
    # close to the input itself when the weights are destroyed (spearman_abs ~0.99 at the last stage)
    check_method(input_times_gradient, expect={"mean_shift": False, "checkerboard": False, "cascading": False})
