"""Progress of long work: a live line on a terminal, a few log lines elsewhere (CI, files, DVC logs).

Logs get a line per tenth of the work at most, and none more often than every ``LOG_EVERY_S`` seconds,
so a 10,000-clip corpus writes about ten lines, not 10,000; the last line always comes.
"""

from __future__ import annotations

import logging
import sys
import time

LOG_EVERY_S = 5.0


class Progress:
    def __init__(self, total: int, unit: str, logger: logging.Logger | logging.LoggerAdapter) -> None:
        self.total = total
        self.unit = unit
        self.logger = logger
        self.done = 0
        self.started = time.perf_counter()
        self._tty = sys.stderr.isatty()
        self._next_log = 0.1
        self._last_log = self.started

    def _line(self) -> str:
        elapsed = time.perf_counter() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        return f"{self.done}/{self.total} {self.unit} ({rate:.2f}/s, {left:.0f} s left)"

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self._tty:
            end = "\n" if self.done >= self.total else ""
            print(f"\r{self._line()}\x1b[K", end=end, file=sys.stderr, flush=True)
            return
        now = time.perf_counter()
        finished = self.done >= self.total
        due = self.total and self.done / self.total >= self._next_log and now - self._last_log >= LOG_EVERY_S
        if finished or due:
            self.logger.info("%s", self._line())
            self._last_log = now
            while self.total and self._next_log <= self.done / self.total:
                self._next_log += 0.1
