"""Small shared helpers: atomic writes (the app's own) and a progress bar."""
from __future__ import annotations

import sys

from deocc_live.atomic import atomic_write_bytes

__all__ = ["atomic_write_bytes", "progress"]


def progress(iterable, total=None, desc="", **kwargs):
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, dynamic_ncols=True, file=sys.stderr,
                disable=None, **kwargs)
