"""What every measurement shares: the constants of the set-up, the machine, targets, logging.

Each constant is defined here once; a measurement writes it into its entry of
``results.json`` from the same name, so the stored results say what was run.
"""

from __future__ import annotations

import importlib.metadata
import math
import os
import platform
from pathlib import Path
from typing import Any

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
"""Where a full run writes, and where the book and the README read from."""

RESULTS_FILE = "results.json"
"""The file of every measurement's entry, in the results folder."""

LOSS = "sparse_categorical_crossentropy"
"""The loss of every classifier the benchmarks train."""

BATCH_SIZE = 32
"""The mini-batch size of every measurement."""

DATA_SEED = 0
"""The seed of the data splits (``lrtools.data.load_digits(seed=...)``)."""

RANGE_TEST_STEPS = 100
"""Steps of every range test the benchmarks run."""


def log(message: str) -> None:
    """Print one progress line at once (the run takes minutes; show it working)."""
    print(message, flush=True)


def machine_description() -> dict[str, Any]:
    """Describe the machine the numbers come from.

    Returns:
        ``platform`` (``platform.platform()``), ``processor`` (the CPU model from
        ``/proc/cpuinfo`` where there is one, else ``platform.processor()``),
        ``cpu_count`` (``os.cpu_count()``) and ``memory_gb`` (total memory, or
        ``None`` where it cannot be read).

    Example:

    >>> machine_description()["cpu_count"] >= 1
    True
    """
    processor = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                processor = line.split(":", 1)[1].strip()
                break
    try:
        memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    except (AttributeError, ValueError, OSError):
        memory_gb = None
    return {
        "platform": platform.platform(),
        "processor": processor,
        "cpu_count": os.cpu_count(),
        "memory_gb": None if memory_gb is None else round(memory_gb, 1),
    }


def software_versions() -> dict[str, str | None]:
    """The versions of Python and of the libraries the measurements depend on.

    Returns:
        Package name -> version (``None`` for a package that is not installed).
    """
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in ("lrtools", "keras", "tensorflow", "jax", "keras-tuner", "numpy"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (``None`` where the OS has none)."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def target(description: str, value: float, threshold: float, unit: str) -> dict[str, Any]:
    """Check a measured figure against an upper-bound target, and say by how much.

    Args:
        description: what the target is, in words.
        value: the measured figure.
        threshold: the largest value that meets the target.
        unit: the unit of ``value`` and ``threshold`` (for the report).

    Returns:
        A dict with the inputs, ``met`` (``value <= threshold``) and ``margin``
        (``threshold - value``: positive by how much it was met, negative by how
        much it was missed).

    Example:

    >>> target("overhead", 1.05, 1.10, "ratio")["met"]
    True
    """
    return {
        "description": description,
        "value": float(value),
        "threshold": float(threshold),
        "unit": unit,
        "met": bool(value <= threshold),
        "margin": float(threshold - value),
    }


def json_ready(value: Any) -> Any:
    """Replace every NaN or infinite float in nested dicts and lists by ``None``.

    JSON has no NaN: a run that never reached its target is ``null`` in results.json.

    Example:

    >>> json_ready({"epochs": [6.0, float("nan")]})
    {'epochs': [6.0, None]}
    """
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
