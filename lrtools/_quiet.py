"""TensorFlow's start-up notices, held to the level ``TF_CPP_MIN_LOG_LEVEL`` asks for.

TensorFlow reads ``TF_CPP_MIN_LOG_LEVEL`` only after its libraries have loaded, and the lines it
logs while loading them (``oneDNN custom operations are on``, ``Could not find cuda drivers``,
and absl's ``All log messages before absl::InitializeLog() ...``) reach standard error whatever
the variable says. In a notebook they appear under the first import as if something had failed.
``import lrtools`` imports Keras (and so TensorFlow) inside :func:`start_up_notices_filtered`,
which applies the variable to those lines too: with ``TF_CPP_MIN_LOG_LEVEL=3`` (what every
chapter sets) only fatal lines pass, with ``1`` warnings and errors pass, and with ``0`` or
unset nothing is filtered. Every line that is not one of absl's start-up lines passes untouched.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator

# absl's prefix: severity letter, date, time, thread, file:line]
_ABSL_LINE = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^ \]]+:\d+\] ")
_ABSL_BANNER = "WARNING: All log messages before absl::InitializeLog() is called"
_SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}


def minimum_level() -> int:
    """The level ``TF_CPP_MIN_LOG_LEVEL`` asks for: 0 (everything) to 3 (fatal only)."""
    try:
        return max(0, min(3, int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))))
    except ValueError:
        return 0


def filter_notices(text: str, level: int) -> str:
    """``text`` without absl's start-up lines below ``level`` (and the banner, if all went).

    Example:

    >>> filter_notices("I0000 00:00:17.1 9 port.cc:153] oneDNN ...\\nkept\\n", 1)
    'kept\\n'
    """
    kept: list[str] = []
    banners: list[int] = []
    absl_kept = False
    for line in text.splitlines(keepends=True):
        match = _ABSL_LINE.match(line)
        if match and _SEVERITY[match.group(1)] < level:
            continue
        absl_kept = absl_kept or bool(match)
        if line.startswith(_ABSL_BANNER) and level > 0:
            banners.append(len(kept))
        kept.append(line)
    if not absl_kept:
        kept = [line for index, line in enumerate(kept) if index not in banners]
    return "".join(kept)


@contextlib.contextmanager
def start_up_notices_filtered() -> Iterator[None]:
    """Run the block with file descriptor 2 captured, then pass on what the level allows.

    Does nothing when TensorFlow is already imported, when the level is 0, or when standard
    error has no file descriptor. Descriptor 2 is restored even when the block raises.
    """
    level = minimum_level()
    if "tensorflow" in sys.modules or level == 0:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = filter_notices(capture.read().decode(errors="replace"), level)
            if text:
                os.write(2, text.encode())
