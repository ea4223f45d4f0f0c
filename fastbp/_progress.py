"""A tiny text progress bar (for downloads and training epochs).

fastbp's runtime dependencies are NumPy and SciPy only; a progress bar is a few
dozen lines, so fastbp has its own instead of depending on tqdm.  It writes one
line, redrawn in place with a carriage return, to a stream (stderr by default), at
most every ``min_interval`` seconds, and nothing at all when disabled.  By default it
is enabled only when the stream is a terminal, so pipes and log files stay clean.
"""

from __future__ import annotations

import sys
import time
from typing import IO

__all__ = ["Progress", "format_bytes"]


def format_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 kB"`` (decimal units)."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def _format_time(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    m, s = divmod(seconds, 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """A progress bar: ``with Progress(total, "train") as bar: bar.update(1, "info")``.

    Parameters
    ----------
    total : int or None
        Number of steps (None: unknown, no bar, only the count).
    desc : str
        Label at the left.
    stream : file, optional
        Where to draw (default ``sys.stderr``).
    enabled : bool, optional
        Draw or not; default: only when ``stream`` is a terminal.
    unit : {"", "bytes"}
        ``"bytes"`` formats the counts as sizes.
    min_interval : float
        Minimum seconds between redraws (the last step is always drawn).
    width : int
        Characters of the bar itself.
    """

    def __init__(
        self,
        total: int | None,
        desc: str = "",
        stream: IO[str] | None = None,
        enabled: bool | None = None,
        unit: str = "",
        min_interval: float = 0.1,
        width: int = 24,
    ) -> None:
        self.total = total
        self.desc = desc
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self.unit = unit
        self.min_interval = min_interval
        self.width = width
        self.n = 0
        self.postfix = ""
        self._start = time.perf_counter()
        self._last_draw = -float("inf")
        self._last_len = 0
        self._closed = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _count(self, n: float) -> str:
        return format_bytes(n) if self.unit == "bytes" else f"{int(n)}"

    def render(self) -> str:
        """The line as it would be drawn now."""
        elapsed = time.perf_counter() - self._start
        parts = [self.desc] if self.desc else []
        if self.total:
            frac = min(1.0, self.n / self.total)
            filled = int(frac * self.width)
            parts.append("[" + "#" * filled + "." * (self.width - filled) + "]")
            parts.append(f"{self._count(self.n)}/{self._count(self.total)}")
            if 0 < self.n < self.total:
                eta = elapsed / self.n * (self.total - self.n)
                parts.append(f"{_format_time(elapsed)}<{_format_time(eta)}")
            else:
                parts.append(_format_time(elapsed))
        else:
            parts.append(f"{self._count(self.n)} {_format_time(elapsed)}")
        if self.postfix:
            parts.append(self.postfix)
        return " ".join(parts)

    def _draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not force and now - self._last_draw < self.min_interval:
            return
        self._last_draw = now
        line = self.render()
        pad = " " * max(0, self._last_len - len(line))
        self.stream.write("\r" + line + pad)
        self.stream.flush()
        self._last_len = len(line)

    def write(self, line: str, file: IO[str] | None = None) -> None:
        """Print ``line`` (to stdout by default) above the bar, without breaking it."""
        out = file if file is not None else sys.stdout
        if self.enabled and self._last_len:
            self.stream.write("\r" + " " * self._last_len + "\r")
            self.stream.flush()
            self._last_len = 0
        print(line, file=out, flush=True)
        if self.enabled and self._last_draw > -float("inf"):
            self._draw(force=True)

    def update(self, n: float = 1, postfix: str | None = None) -> None:
        """Advance by ``n`` steps and optionally replace the text after the bar."""
        self.n += n
        if postfix is not None:
            self.postfix = postfix
        self._draw(force=self.total is not None and self.n >= self.total)

    def close(self) -> None:
        """Draw the final state and end the line (once)."""
        if self._closed:
            return
        self._closed = True
        if self.enabled:
            self._draw(force=True)
            self.stream.write("\n")
            self.stream.flush()
