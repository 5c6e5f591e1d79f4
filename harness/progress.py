"""What a long run is doing, said at a steady rate: a line every few seconds, or one line redrawn in
place when the output is a terminal.

A :class:`Progress` holds the current section and step, how far the step is (``done`` of ``total``
``unit``), a few figures the step chooses to show, and the resident memory of one process it
watches. A ticker thread writes it out every ``interval`` seconds whatever the step is doing, so a
step blocked in a subprocess or a long wait still shows its elapsed time. Steps only update
counters (under a lock: the fault checks count from several threads); they never print.

Sample line (a log; on a terminal the same text is redrawn in place)::

    [ 2:31] http fuzz 1:52  41200/100000 inputs (41%)  368/s  eta 2:40  5xx=0 hung=0  node 131 MiB

The ticker is a thread, not a Trio task, because the runs it reports on are blocking code that calls
``trio.run`` for some steps and threads for others; it takes the lock, formats, writes, and touches
nothing else.
"""

from __future__ import annotations

import sys
import threading
import time
from types import TracebackType
from typing import TextIO

from harness.measure import rss_kib

__all__ = ["Progress", "clock"]


def clock(seconds: float) -> str:
    """``m:ss`` (``h:mm:ss`` past an hour)."""
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Progress:
    """Progress of a run, written to ``stream`` (stderr by default) while it is entered.

    ``live``: redraw one line in place (default: when ``stream`` is a terminal); otherwise write a
    line every ``interval`` seconds (default 5; 0.5 when live). ``enabled=False`` writes nothing
    (tests, and callers that pass no progress)."""

    def __init__(self, stream: TextIO | None = None, *, interval: float | None = None, live: bool | None = None,
                 enabled: bool = True) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.interval = interval if interval is not None else (0.5 if self.live else 5.0)
        self.enabled = enabled
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = time.monotonic()
        self._section = ""
        self._section_started = self._started
        self._step = ""
        self._step_started = self._started
        self._done = 0
        self._total: int | None = None
        self._unit = ""
        self._seconds: float | None = None
        self._figures: dict[str, object] = {}
        self._pid: int | None = None
        self._pid_label = ""
        self._drawn = False
        self.peak_rss_kib: int | None = None
        """The largest RSS the ticker saw in the watched process since :meth:`watch`."""

    @classmethod
    def silent(cls) -> Progress:
        return cls(enabled=False, live=False, stream=sys.stderr)

    # -- what the steps call -------------------------------------------------------------------
    def section(self, name: str) -> None:
        """A new section (``http fuzz``, ``faults``): its clock starts; no step, no watched process."""
        with self._lock:
            self._section, self._section_started = name, time.monotonic()
            self._reset_step("")
            self._pid = None

    def step(self, label: str, *, total: int | None = None, unit: str = "", seconds: float | None = None) -> None:
        """A new step of the section: ``total`` things to count in ``unit``, or a step that lasts
        about ``seconds`` (its elapsed time is shown against them)."""
        with self._lock:
            self._reset_step(label)
            self._total, self._unit, self._seconds = total, unit, seconds

    def advance(self, n: int = 1) -> None:
        with self._lock:
            self._done += n

    def figures(self, **values: object) -> None:
        """Figures shown after the count (``5xx=0 hung=0``); a later call replaces a key's value."""
        with self._lock:
            self._figures.update(values)

    def watch(self, pid: int | None, label: str = "node") -> None:
        """Show the RSS of ``pid`` (None: stop) in each line, and keep its peak in :attr:`peak_rss_kib`."""
        with self._lock:
            self._pid, self._pid_label, self.peak_rss_kib = pid, label, None

    def say(self, message: str) -> None:
        """A line of its own, kept (a step's summary); the live line is redrawn after it."""
        if not self.enabled:
            return
        with self._lock:
            self._write(f"[{clock(time.monotonic() - self._started):>5}] {message}", keep=True)

    # -- reading and writing ---------------------------------------------------------------------
    def line(self) -> str:
        """The current progress line."""
        with self._lock:
            return self._line(time.monotonic())

    def __enter__(self) -> Progress:
        if self.enabled:
            self._stop.clear()
            self._thread = threading.Thread(target=self._tick, name="progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self.enabled and self.live and self._drawn:
            with self._lock:  # clear the live line: what follows starts on a clean line
                self._drawn = False
                try:
                    self.stream.write("\r\x1b[K")
                    self.stream.flush()
                except (OSError, ValueError):
                    pass

    def _reset_step(self, label: str) -> None:
        self._step, self._step_started = label, time.monotonic()
        self._done, self._total, self._unit, self._seconds = 0, None, "", None
        self._figures = {}

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            rss = None
            pid = self._pid
            if pid is not None:
                rss = rss_kib(pid)
            with self._lock:
                if rss is not None and pid == self._pid:
                    self.peak_rss_kib = max(rss, self.peak_rss_kib or 0)
                self._write(self._line(time.monotonic(), rss), keep=not self.live)

    def _line(self, now: float, rss: int | None = None) -> str:
        parts = [f"[{clock(now - self._started):>5}]", f"{self._section} {clock(now - self._section_started)}"]
        if self._step:
            parts.append(self._step)
        step_elapsed = now - self._step_started
        if self._total is not None:
            count = f"{self._done}/{self._total} {self._unit}".rstrip()
            if self._total:
                count += f" ({100 * self._done // self._total}%)"
            parts.append(count)
            if self._done and step_elapsed > 0:
                rate = self._done / step_elapsed
                if rate >= 1:
                    parts.append(f"{rate:.0f}/s")
                if self._total > self._done:
                    parts.append(f"eta {clock((self._total - self._done) / rate)}")
        elif self._done:
            parts.append(f"{self._done} {self._unit}".rstrip())
        if self._seconds is not None:
            parts.append(f"{step_elapsed:.0f}/{self._seconds:.0f} s")
        if self._figures:
            parts.append(" ".join(f"{k}={v}" for k, v in self._figures.items()))
        if rss is not None:
            parts.append(f"{self._pid_label} {rss / 1024:.0f} MiB")
        return parts[0] + " " + "  ".join(parts[1:])

    def _write(self, text: str, *, keep: bool) -> None:
        """Write ``text`` (called with the lock held): live, it replaces the line being redrawn."""
        try:
            if self.live:
                self.stream.write("\r" + text + "\x1b[K" + ("\n" if keep else ""))
                self._drawn = not keep
            else:
                self.stream.write(text + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # the terminal went away: the run goes on
            pass
