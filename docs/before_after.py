"""Makes docs/before_after.jpg: real masked photos through the command-line app, each pair input
and output. The photos are the 241st to 252nd of `deocc-train e2e`'s seed-0 order (the e2e shows
the first 40, and the next 200 were used to choose between generators): none of them chose anything.

    python docs/before_after.py ../shared/data/occluded_real docs/before_after.jpg [--engine FILE]
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2

from trainer.e2e import pair_tile, panel, real_photos


def main(real_root: str, out: str, *engine: str) -> None:
    files = real_photos(real_root, 252, 0)[240:252]
    with tempfile.TemporaryDirectory() as folder:
        source, result = Path(folder) / "in", Path(folder) / "out"
        source.mkdir()
        for path in files:
            shutil.copy(path, source / path.name)
        subprocess.run(["deocc-live", "--input", str(source), "--output", str(result), *engine], check=True)
        tiles = [pair_tile(cv2.imread(str(source / path.name)), cv2.imread(str(result / path.name)), height=180,
                           gap=8, interpolation=cv2.INTER_AREA) for path in files]
    cv2.imwrite(out, panel(tiles, width=1400), [cv2.IMWRITE_JPEG_QUALITY, 90])


if __name__ == "__main__":
    main(*sys.argv[1:])
