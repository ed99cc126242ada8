"""The trainer's progress bar."""
from __future__ import annotations

import sys


def progress(iterable, total=None, desc="", **kwargs):
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, dynamic_ncols=True, file=sys.stderr,
                disable=None, **kwargs)
