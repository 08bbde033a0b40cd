"""The one way l2pop makes a rich console (CLI tables, demos, benchmark tables).

Values are printed literally: no markup highlighting and no emoji codes, because MAC
addresses contain them (``fa:16:3e:ab:...`` would show ``:ab:`` as an emoji). When the
stream is not a terminal and ``COLUMNS`` is unset, the console is wide enough that ids and
addresses never wrap.
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

from rich.console import Console

PIPE_WIDTH = 240


def make_console(file: TextIO | None = None) -> Console:
    """A console on ``file`` (stdout by default); wide when not a terminal."""
    stream = file if file is not None else sys.stdout
    width = None
    if not (hasattr(stream, "isatty") and stream.isatty()) and "COLUMNS" not in os.environ:
        width = PIPE_WIDTH
    return Console(file=stream, width=width, highlight=False, soft_wrap=False, emoji=False)
