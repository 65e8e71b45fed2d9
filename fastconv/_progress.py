"""The one progress bar of long work (training epochs, downloads): tqdm when installed, else a
plain line on stderr. tqdm stays optional: it is imported only when a bar is made."""
import sys
import time

__all__ = ["progress_bar"]

_REDRAW_S = 0.1  # a few redraws per second: enough to look alive, too few to cost anything


def progress_bar(total, desc, unit="img"):
    """A bar counting up to ``total`` (None when unknown) in ``unit`` ("B" shows bytes as MiB).

    The result has tqdm's ``update(n)``, ``set_postfix_str(text)``, ``close()`` and works as
    a context manager (closed on exit), whether it is a tqdm bar or the plain fallback.
    """
    try:
        # "import tqdm.auto", not "from tqdm.auto import": it also looks up tqdm itself, so a
        # tqdm that is absent (or blocked in sys.modules) is noticed after tqdm.auto was loaded.
        import tqdm.auto
    except ImportError:
        return PlainProgress(total, desc, unit)
    scale = dict(unit_scale=True, unit_divisor=1024) if unit == "B" else {}
    return tqdm.auto.tqdm(total=total, desc=desc, unit=unit, leave=True, dynamic_ncols=True, file=sys.stderr,
                **scale)


class PlainProgress:
    """The fallback without tqdm: one stderr line, rewritten in place.

    Items show as ``desc: [=====>    ] n/total``; bytes as ``desc: 42% of 9.5 MiB`` (or the
    MiB so far when the size is unknown).
    """

    _WIDTH = 24

    def __init__(self, total, desc, unit="img"):
        self.total, self.desc, self.unit = total, desc, unit
        self.n, self.postfix = 0, ""
        self._last_draw = None

    def update(self, n):
        self.n += n
        now = time.perf_counter()
        finished = self.total is not None and self.n >= self.total
        if finished or self._last_draw is None or now - self._last_draw >= _REDRAW_S:
            self._draw(now)

    def set_postfix_str(self, text):
        self.postfix = text
        self._draw(time.perf_counter())

    def close(self):
        self._draw(time.perf_counter())
        sys.stderr.write("\n")
        sys.stderr.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _counter(self):
        if self.unit == "B":
            if not self.total:
                return f"{self.n / 2**20:.1f} MiB"
            return f"{self.n * 100 // self.total}% of {self.total / 2**20:.1f} MiB"
        total = self.total or 0
        filled = self._WIDTH * self.n // max(total, 1) if total else 0
        bar = "=" * filled + ">" * (filled < self._WIDTH) + " " * (self._WIDTH - filled - 1)
        return f"[{bar}] {self.n}/{self.total if self.total is not None else '?'}"

    def _draw(self, now):
        self._last_draw = now
        postfix = f" {self.postfix}" if self.postfix else ""
        sys.stderr.write(f"\r{self.desc}: {self._counter()}{postfix}")
        sys.stderr.flush()
