"""Optional dependencies: import them on first use, or say which extra installs them.

lrtools's core needs only Keras and NumPy. Plotting, DataFrames, the bundled data
set and keras-tuner come with extras of the distribution (see ``pyproject.toml``),
and a module or method that needs one imports it through :func:`require`, so a
missing package gives one clear message: what needs it, which extra brings it, and
the pip command.

Example:

>>> np = require("numpy", extra="plot", feature="this example")
>>> try:
...     require("no_such_package_xyz", extra="plot", feature="RangeTestResult.plot()")
... except ImportError as error:
...     print(error)
RangeTestResult.plot() needs no_such_package_xyz, which the [plot] extra installs: \
pip install "lrtools-keras[plot]"
"""

from __future__ import annotations

import importlib
from types import ModuleType

DISTRIBUTION = "lrtools-keras"
"""The name lrtools is installed by (``pip install lrtools-keras``); it imports as ``lrtools``."""

EXTRAS = {
    "matplotlib": "plot",
    "seaborn": "plot",
    "pandas": "plot",
    "sklearn": "data",
    "keras_tuner": "tuning",
}
"""Which extra brings each optional package (``pandas`` also comes with ``[tuning]``)."""


def install_hint(extra: str) -> str:
    """The pip command that installs ``extra``, for error messages."""
    return f'pip install "{DISTRIBUTION}[{extra}]"'


def require(module: str, *, extra: str | None = None, feature: str | None = None) -> ModuleType:
    """Import ``module``, or raise an ``ImportError`` that names the extra to install.

    Args:
        module: the module to import (``"matplotlib.pyplot"``, ``"pandas"``).
        extra: the extra that installs it; by default looked up in :data:`EXTRAS`
            from the top-level package name.
        feature: what needs it, for the message (``"RangeTestResult.to_frame()"``).

    Returns:
        The imported module.

    Raises:
        ImportError: if it is not installed; the message names the extra and the
            pip command. The original error is chained.
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        top = module.split(".")[0]
        extra = extra or EXTRAS.get(top, "all")
        what = feature or "This part of lrtools"
        raise ImportError(
            f"{what} needs {top}, which the [{extra}] extra installs: {install_hint(extra)}"
        ) from error
