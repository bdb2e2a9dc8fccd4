"""bench.testing.check_method: the gate users put in their own CI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.testing import MethodCheckError, check_method

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "external_method"


@pytest.mark.slow  # the reference paper_mlp (trained on first use)
def test_gradient_passes(trained_mlp):
    report = check_method("gradient")
    assert report.ok
    assert set(report.rows.test) == {"mean_shift", "checkerboard", "cascading"}


@pytest.mark.slow  # the reference paper_mlp (trained on first use)
def test_gradient_x_input_fails_with_a_readable_report(trained_mlp):
    with pytest.raises(MethodCheckError) as err:
        check_method("gradient_x_input")
    text = str(err.value)
    assert "FAIL" in text and "mean_shift" in text and "not invariant" in text


def test_unknown_expectation_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown expectation"):
        check_method("gradient", expect={"rotation": True})


@pytest.mark.slow  # a pytest subprocess on the reference paper_mlp
def test_the_documented_external_example_runs(trained_mlp):
    # the example lives outside the package, as a user's project would; its own pytest run must pass
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE)],
                         cwd=EXAMPLE, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "2 passed" in res.stdout
