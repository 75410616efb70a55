"""Writing results so that a killed job never leaves a half-written file behind."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np


@contextmanager
def atomic_output(path: str | Path) -> Iterator[BinaryIO]:
    """A binary handle whose content appears at ``path`` only when the block completes.

    The temporary name sits beside ``path`` (same file system, so the rename is atomic) and is
    created with ``open``, so the result gets the user's umask rather than mkstemp's 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            yield handle
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(obj, path) -> None:
    """Strict JSON: a score that could not be computed (NaN) is written as null."""

    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (float, np.floating)):
            return None if np.isnan(value) else float(value)
        return value

    Path(path).write_text(json.dumps(clean(obj), indent=2, sort_keys=True, allow_nan=False))
