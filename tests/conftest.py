"""Shared fixtures: tiny real data from ../shared/data, a few-step generator made by our own
trainer and exporter, and the real MediaPipe model from ../shared/models."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from media import DATA, LANDMARKER, MODELS  # noqa: E402

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def pytest_configure(config):
    if not LANDMARKER.is_file():
        raise pytest.UsageError(f"tests need {LANDMARKER} (set DEOCC_MODEL_DIR)")
    if not (DATA / "faces").is_dir():
        raise pytest.UsageError(f"tests need the data folder {DATA} (set DEOCC_DATA)")
    os.environ["DEOCC_MODEL_DIR"] = str(MODELS)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def tiny_faces(tmp_path_factory) -> Path:
    """24 faces of three sources, linked into one small folder."""
    root = tmp_path_factory.mktemp("faces")
    for source in ("utkface", "celeba_crops", "web_crops"):
        (root / source).mkdir()
        for path in sorted((DATA / "faces" / source).glob("*.jpg"))[:8]:
            (root / source / path.name).symlink_to(path)
    return root


@pytest.fixture(scope="session")
def tiny_pairs(tiny_faces, tmp_path_factory) -> Path:
    from trainer.configs import SynthConfig
    from trainer.synth import run

    out = tmp_path_factory.mktemp("pairs")
    run(SynthConfig(faces=str(tiny_faces), occluders=str(DATA / "occluders"), out=str(out), workers=1))
    return out


@pytest.fixture(scope="session")
def tiny_run(tiny_pairs, tmp_path_factory) -> Path:
    from trainer.configs import FitConfig
    from trainer.fit import run

    out = tmp_path_factory.mktemp("run")
    run(FitConfig(data=str(tiny_pairs), out=str(out), steps=6, batch=4, adv_start=3, sample_every=3,
                  log_every=2, workers=0, width=0.5))
    return out


@pytest.fixture(scope="session")
def tiny_onnx(tiny_run, tmp_path_factory) -> Path:
    from trainer.export import export_onnx

    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    export_onnx(tiny_run / "last.ckpt", path)
    return path


@pytest.fixture(scope="session")
def generator_onnx(tiny_onnx) -> Path:
    """The shipped generator when it is there, else the tiny one."""
    from deocc_live.assets import find_asset, DEFAULT_GENERATOR

    return find_asset(DEFAULT_GENERATOR) or tiny_onnx
