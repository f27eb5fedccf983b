"""Shared pytest set-up: quiet TensorFlow's C++ logs.

Do not set MPLBACKEND here: it is inherited by the notebook kernels that nbval and
the book build start, and a kernel with MPLBACKEND=Agg shows no figures.
Matplotlib already picks a headless backend when there is no display.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
