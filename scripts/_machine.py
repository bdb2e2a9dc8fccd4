"""What the benchmark scripts report about the machine they ran on (shared by ``scripts/bench_*.py``).

:func:`describe` gathers it once: CPU model, CPU counts (all, and usable by this process), torch's intra-op
threads, the device (with the GPU's name on CUDA), the Python version, library versions (torch, numpy, scipy,
plus any the caller adds) and the load average. Each script formats the :class:`Machine` its own way (the
results files keep their layout). Nothing here changes a setting: call it after ``torch.set_num_threads``.

The scripts are run as ``python scripts/<name>.py``, so ``scripts/`` is first on ``sys.path`` and
``import _machine`` works; they also add this folder themselves for other ways of running them.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy
import torch

__all__ = ["Machine", "cpu_model", "describe", "format_load", "load_average"]


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (Linux), else ``platform.processor()`` or the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> tuple[float, float, float] | None:
    """The 1/5/15-minute load average, or ``None`` where the OS does not report one."""
    try:
        return os.getloadavg()
    except (AttributeError, OSError):
        return None


def format_load(load: tuple[float, float, float] | None, spec: str = ".2f", sep: str = " / ") -> str:
    """``load`` formatted value by value with ``spec``, joined by ``sep``; ``"n/a"`` for ``None``."""
    return sep.join(format(v, spec) for v in load) if load is not None else "n/a"


@dataclass(frozen=True)
class Machine:
    """One description of the machine. ``usable_cpus``: CPUs this process may run on (its affinity mask where
    the OS has one, else ``cpu_count``); ``gpu``: the CUDA device's name, ``None`` on other devices;
    ``versions``: ``{library: version}`` in report order (torch, numpy, scipy, then the caller's extras);
    ``load``: the load average when :func:`describe` ran (``None`` where unavailable)."""

    cpu_model: str
    cpu_count: int | None
    usable_cpus: int | None
    torch_threads: int
    device: str
    gpu: str | None
    python: str
    versions: dict[str, str] = field(default_factory=dict)
    load: tuple[float, float, float] | None = None

    def load_str(self, spec: str = ".2f", sep: str = " / ") -> str:
        """The load average at :func:`describe` time, formatted (see :func:`format_load`)."""
        return format_load(self.load, spec, sep)


def describe(device: str | torch.device = "cpu", extra_versions: Mapping[str, str] | None = None) -> Machine:
    """Describe this machine now, for work on ``device``. ``extra_versions`` (``{library: version}``) are listed
    after torch, numpy and scipy. Reads only; the GPU's name is asked for only when ``device`` is CUDA."""
    dev = torch.device(device)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    versions = {"torch": torch.__version__, "numpy": np.__version__, "scipy": scipy.__version__}
    versions.update(extra_versions or {})
    return Machine(
        cpu_model=cpu_model(), cpu_count=os.cpu_count(), usable_cpus=usable, torch_threads=torch.get_num_threads(),
        device=str(device), gpu=torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
        python=platform.python_version(), versions=versions, load=load_average(),
    )
