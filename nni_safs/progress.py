"""Progress of a long command: one updating line on a terminal, plain lines otherwise.

``safs run`` and ``safs experiment`` run for minutes to hours. On a terminal, tqdm redraws one
line (stage, jobs done out of the known total, elapsed time); where the output is a file or a
pipe (CI logs, ``nohup``, NNI's own logs), a redrawn line would be noise, so a plain line is
printed each time what it says changes (the elapsed time alone is not a change).
"""
from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm.auto import tqdm


class ProgressLine:
    """``update(...)`` as the work goes on; ``close()`` at the end."""

    def __init__(self, unit: str, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.unit = unit
        self.stream = stream or sys.stdout
        self.enabled = enabled
        self.start = time.monotonic()
        self.bar = tqdm(file=self.stream, dynamic_ncols=True, bar_format="{desc} [{elapsed}]") \
            if enabled and self.stream.isatty() else None
        self.last = ""

    def update(self, done: int, total: int, state: str, detail: str = "", exact: bool = True,
               live: str = "") -> None:
        """``done`` of ``total`` units (a bound, ``at most``, unless ``exact``) in ``state``.

        ``live`` (an epoch, a score) changes too often for a log: it shows on a terminal only.
        """
        if not self.enabled:
            return
        line = f"{state}: {done} of {'' if exact else 'at most '}{total} {self.unit}" + (f", {detail}" if detail else "")
        if self.bar is not None:
            self.bar.set_description_str(line + (f", {live}" if live else ""), refresh=False)
            self.bar.refresh()
        elif line != self.last:
            self.last = line
            print(f"{line} [{tqdm.format_interval(time.monotonic() - self.start)}]", file=self.stream, flush=True)

    def close(self) -> None:
        """End the updating line (a terminal's next output starts on a line of its own)."""
        if self.bar is not None:
            self.bar.close()
