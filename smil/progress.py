"""Progress of long loops: a tqdm bar on a terminal, plain log lines in batch jobs."""

from __future__ import annotations

import sys
import time


class Progress:
    """tqdm on a terminal; otherwise a plain line at every 10 % of ``total`` (at most one per 5 s)
    and at the end. ``enabled``: None = bar only on a terminal, False = silent, True = bar."""

    def __init__(self, total: int | None, enabled: bool | None, desc: str, unit: str = "sample"):
        self.total, self.count, self.desc, self.unit = total, 0, desc, unit
        self.t0 = self._last = time.monotonic()
        self._quiet = enabled is False
        self._bar = None
        if (sys.stderr.isatty() if enabled is None else enabled) and not self._quiet:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr)
        self._every = max(1, -(-total // 10)) if total else 1

    def update(self, n: int = 1) -> None:
        self.count += n
        if self._bar is not None:
            self._bar.update(n)
            return
        if self._quiet:
            return
        now = time.monotonic()
        final = self.total is not None and self.count >= self.total
        if final or (self.count % self._every < n and now - self._last >= 5.0):
            self._last = now
            of = f"/{self.total}" if self.total else ""
            rate = self.count / max(now - self.t0, 1e-9)
            print(f"{self.desc}: {self.count}{of} {self.unit}s ({rate:.1f}/s)", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
