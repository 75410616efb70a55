"""Glue between Snakemake's `script:` directive and the package: logging, threads, seeding."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import time
from pathlib import Path

LOG = logging.getLogger("namd")


@contextlib.contextmanager
def _library_bars_off():
    """tqdm bars of other libraries (transformers' "Loading weights") off, as TQDM_DISABLE=1 would set them
    had it been in the environment when tqdm was imported; namd's own bars pass `disable` themselves and
    write log lines instead (`namd.progress`)."""
    from tqdm.std import tqdm

    original = tqdm.__init__
    tqdm.__init__ = functools.partialmethod(original, disable=True)
    try:
        yield
    finally:
        tqdm.__init__ = original


@contextlib.contextmanager
def rule_context(smk, *, seed: int | None = None):
    """Send everything a rule prints to its `log:` file and fail with the traceback logged there.

    A log file gets lines, never a progress bar's carriage returns (`namd.progress`).
    """
    log_path = Path(smk.log[0]) if len(smk.log) else None
    stream = open(log_path, "w", buffering=1) if log_path else sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    threads = int(getattr(smk, "threads", 1) or 1)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    old_out, old_err = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = stream
    start = time.time()
    try:
        with _library_bars_off() if log_path else contextlib.nullcontext():
            import torch

            from namd.runtime import make_deterministic, numerics_signature

            torch.set_num_threads(threads)
            if seed is not None:
                make_deterministic(seed, threads)
            LOG.info("rule %s: %s", getattr(smk, "rule", "?"), numerics_signature())
            yield LOG
            LOG.info("rule %s finished in %.1f s", getattr(smk, "rule", "?"), time.time() - start)
    except BaseException:
        LOG.exception("rule %s failed", getattr(smk, "rule", "?"))
        raise
    finally:
        sys.stdout, sys.stderr = old_out, old_err
        root.handlers[:] = []
        if log_path:
            stream.close()
