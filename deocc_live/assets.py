"""Where the shipped generator lives: the repository's assets/ folder (source checkouts and
editable installs) or share/deocc-live/assets under the install prefix."""
from __future__ import annotations

import os
import sys
from pathlib import Path

DEFAULT_GENERATOR = "deocc_gen.onnx"
# Static int8 of the same generator: faster on CPUs with int8 dot products (VNNI on x86), within
# 0.1 dB of it (assets/MODEL_CARD.md).
CPU_GENERATOR = "deocc_gen_int8.onnx"
# Our own detector of covered faces MediaPipe misses (`deocc-train finder`; assets/FINDER_CARD.md).
FINDER = "deocc_finder.onnx"


def asset_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("DEOCC_ASSETS"):
        dirs.append(Path(os.environ["DEOCC_ASSETS"]))
    dirs.append(Path(__file__).resolve().parent.parent / "assets")
    dirs.append(Path(sys.prefix) / "share" / "deocc-live" / "assets")
    return dirs


def find_asset(name: str) -> Path | None:
    for folder in asset_dirs():
        if (folder / name).is_file():
            return folder / name
    return None


def default_generator() -> Path:
    """The int8 generator where ONNX Runtime runs on a CPU whose int8 kernels are its fast ones;
    the fp32 one where it has CUDA, or on an x86 CPU without VNNI (there the fp32 file is both the
    faster and the exact one: README, "Int8 on CPUs without VNNI")."""
    from engines import cpu_int8_is_fast, has_cuda_provider

    if not has_cuda_provider() and cpu_int8_is_fast():
        path = find_asset(CPU_GENERATOR)
        if path is not None:
            return path
    path = find_asset(DEFAULT_GENERATOR)
    if path is None:
        raise FileNotFoundError(f"the shipped generator {DEFAULT_GENERATOR} is missing from "
                                f"{', '.join(str(d) for d in asset_dirs())}; reinstall, or pass --engine FILE")
    return path
