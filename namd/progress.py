"""Progress: a tqdm bar on an interactive terminal, a few plain log lines everywhere else.

tqdm redraws its bar with carriage returns. On a terminal that is one line that updates; in a
rule's log file (`namd.workflow.rule_context` sends stderr there) it was hundreds of updates on
one line. `progress_bar` decides once, when the bar starts: a terminal (or a notebook) gets
tqdm's bar; otherwise the same counter logs one line, with tqdm's counts, rate and time left,
each time another `log_percent` percent is done (and once at the end if the loop stops early).
`log_percent=None` logs nothing: for loops that already log a line per step (training's epochs).
"""

from __future__ import annotations

import io
import logging
import sys

from tqdm import tqdm as plain_tqdm
from tqdm.auto import tqdm as auto_tqdm

LOG = logging.getLogger("namd.progress")

#: without a terminal, a line each time this much more of the work is done
LOG_PERCENT = 10
_LOG_FORMAT = "{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
_LOG_FORMAT_NO_TOTAL = "{desc}: {n_fmt} [{elapsed}, {rate_fmt}{postfix}]"


def interactive() -> bool:
    """A bar can redraw in place: stderr is a terminal, or tqdm.auto found a notebook."""
    notebook = any(cls.__module__ == "tqdm.notebook" for cls in auto_tqdm.__mro__)
    return notebook or bool(getattr(sys.stderr, "isatty", lambda: False)())


class _LogLines(plain_tqdm):
    """tqdm's counter and rate, written as log lines instead of a bar (tqdm's documented `display` hook)."""

    def __init__(self, *args, log_percent: int | None = LOG_PERCENT, **kwargs):
        self._log_percent = log_percent
        self._logged_n = 0
        self._logged_bucket = 0
        kwargs.update(file=io.StringIO(), mininterval=0, miniters=1)
        super().__init__(*args, **kwargs)
        self.bar_format = _LOG_FORMAT if self.total else _LOG_FORMAT_NO_TOTAL

    def display(self, msg=None, pos=None):
        if self._log_percent is None or self.n == self._logged_n:
            return True
        if self.total:
            bucket = int(100 * self.n / self.total) // self._log_percent
            finished = self.n >= self.total or self.disable  # close() turns disable on before its display
            if bucket == self._logged_bucket and not finished:
                return True
            self._logged_bucket = bucket
        elif not self.disable:
            return True  # no total: one line when the loop ends
        self._logged_n = self.n
        LOG.info("%s", self.__str__())
        return True


def progress_bar(iterable=None, *, desc: str, total: int | None = None, unit: str = "it",
                 disable: bool = False, log_percent: int | None = LOG_PERCENT, **kwargs):
    """A tqdm bar (iterate it, or use it as a context manager and `update`) that suits where it is shown."""
    if interactive():
        return auto_tqdm(iterable, desc=desc, total=total, unit=unit, disable=disable, **kwargs)
    return _LogLines(iterable, desc=desc, total=total, unit=unit, disable=disable, log_percent=log_percent,
                     **kwargs)
