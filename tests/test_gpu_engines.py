"""The GPU paths of two engines: the PyTorch engine replays a CUDA graph per batch size, ONNX Runtime's
CUDA provider runs through I/O binding. Each must give what the plain path gives. The GPU tests run
only where CUDA is present (never faked); the CPU tests check that the CPU paths stay as they were."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engines import open_engine
from engines.metadata import INPUT_NAME, OUTPUT_NAMES
from trainer.export import FP16_TOLERANCE

ROOT = Path(__file__).resolve().parents[1]
GRAPH_TOLERANCE = 1e-2  # graph vs eager: the same fp16 kernels, launched differently
TF32_TOLERANCE = 1e-2  # ORT's CUDA convolutions may use TF32: fp32 in name, ~fp16 mantissa
SIZES = (1, 3, 1, 8, 3, 16, 2, 2)  # repeats reuse a graph or binding; the sizes interleave


def _torch_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def _ort_cuda() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


needs_torch_cuda = pytest.mark.skipif(not _torch_cuda(), reason="needs torch with an NVIDIA GPU")
needs_ort_cuda = pytest.mark.skipif(not _ort_cuda(), reason="needs onnxruntime's CUDA provider")
ORT_CUDA = ["CUDAExecutionProvider", "CPUExecutionProvider"]
ORT_CPU = ["CPUExecutionProvider"]


@pytest.fixture(scope="module")
def generator_pt(tiny_run, tmp_path_factory) -> Path:
    """The tiny trained generator as a `.pt` file, made as tests/test_engines.py makes it."""
    from engines.torch_backend import save_generator
    from trainer import checkpoint
    from trainer.export import metadata_for

    path = tmp_path_factory.mktemp("gpu_engines") / "gen.pt"
    state = checkpoint.load(tiny_run / "last.ckpt")
    save_generator(path, checkpoint.generator_from(state), 128, metadata_for(state))
    return path


@pytest.fixture(scope="module")
def tiny_fp16_onnx(tiny_onnx, tmp_path_factory) -> Path:
    """What `deocc-train export --fp16` writes: FP16 inside, FP32 in and out."""
    from trainer.export import export_fp16

    path = tmp_path_factory.mktemp("gpu_engines_fp16") / "tiny_fp16.onnx"
    export_fp16(tiny_onnx, path)
    return path


def _batch(count: int, seed: int, size: int = 128) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (count, 3, size, size)).astype(np.float32)


def _difference(first, second) -> float:
    for a, b in zip(first, second):
        assert a.shape == b.shape and a.dtype == b.dtype == np.float32
    return max(float(np.abs(a - b).max()) for a, b in zip(first, second))


# --- CPU: runs everywhere --------------------------------------------------------------------


def test_cuda_graph_option_changes_nothing_on_cpu(generator_pt):
    with open_engine(generator_pt, device="cpu") as default, \
            open_engine(generator_pt, device="cpu", cuda_graph=False) as eager:
        assert default.spec.device == eager.spec.device == "cpu"
        assert default.spec.precision == eager.spec.precision == "fp32"
        for seed, count in enumerate((1, 3, 1)):
            batch = _batch(count, seed)
            for a, b in zip(default.infer(batch), eager.infer(batch)):
                np.testing.assert_array_equal(a, b)
        assert default.graph_sizes == eager.graph_sizes == [] and not default.graph_errors


@pytest.mark.parametrize("model", ["fp32", "fp16"])
def test_ort_cpu_path_is_a_plain_session_run(tiny_onnx, tiny_fp16_onnx, model):
    import onnxruntime as ort

    path = tiny_onnx if model == "fp32" else tiny_fp16_onnx
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=ORT_CPU)
    with open_engine(path, threads=1, providers=ORT_CPU) as engine:
        assert engine.spec.device == "cpu" and engine.spec.precision == model
        for seed, count in enumerate((2, 1, 2)):
            batch = _batch(count, seed)
            expected = session.run(list(OUTPUT_NAMES), {INPUT_NAME: batch})
            for a, b in zip(engine.infer(batch), expected):
                np.testing.assert_array_equal(a, b)


# --- results belong to the caller: CPU everywhere, GPU where present -------------------------


@pytest.mark.parametrize("backend, device", [
    ("pytorch", "cpu"),
    pytest.param("pytorch", "cuda", marks=needs_torch_cuda),
    ("onnxruntime", "cpu"),
    pytest.param("onnxruntime", "cuda", marks=needs_ort_cuda),
])
def test_a_result_survives_the_next_call(generator_pt, tiny_onnx, backend, device):
    """The generate stage may still hold one result while the next batch runs: no shared buffers."""
    if backend == "pytorch":
        engine = open_engine(generator_pt, device=device)
    else:
        engine = open_engine(tiny_onnx, providers=ORT_CUDA if device == "cuda" else ORT_CPU)
    with engine:
        assert engine.spec.device.startswith(device)
        first = engine.infer(_batch(2, 1))
        kept = [array.copy() for array in first]
        second = engine.infer(_batch(2, 2))
        third = engine.infer(_batch(1, 3))
    for array, copy in zip(first, kept):
        np.testing.assert_array_equal(array, copy)
    for a, b, c in zip(first, second, third):
        assert not np.shares_memory(a, b) and not np.shares_memory(a, c) and not np.shares_memory(b, c)
    assert not np.array_equal(first[0], second[0])  # the second call did compute something else


# --- PyTorch on CUDA: graph replay ------------------------------------------------------------


@needs_torch_cuda
def test_cuda_graph_replay_matches_eager(generator_pt):
    with open_engine(generator_pt) as graphed, open_engine(generator_pt, cuda_graph=False) as eager:
        assert graphed.spec.device.startswith("cuda") and graphed.spec.precision == "fp16"
        worst = 0.0
        for seed, count in enumerate(SIZES):  # a new batch each call: a stale replay would show
            batch = _batch(count, seed)
            expected, actual = eager.infer(batch), graphed.infer(batch)
            assert actual[0].shape == (count, 3, 128, 128) and actual[1].shape == (count, 1, 128, 128)
            worst = max(worst, _difference(expected, actual))
        print(f"CUDA graph vs eager max abs difference: {worst:.2e}")
        assert worst < GRAPH_TOLERANCE
        assert graphed.graph_sizes == sorted(set(SIZES)), graphed.graph_errors
        assert eager.graph_sizes == [] and not eager.graph_errors


@needs_torch_cuda
def test_cuda_graph_fp16_agrees_with_cpu_fp32(generator_pt):
    """Guards against graph and eager sharing one mistake: the CPU fp32 path is the reference."""
    with open_engine(generator_pt) as graphed, open_engine(generator_pt, device="cpu") as reference:
        for seed, count in enumerate((2, 5, 2)):
            batch = _batch(count, seed)
            difference = _difference(reference.infer(batch), graphed.infer(batch))
            assert difference < FP16_TOLERANCE
        assert graphed.graph_sizes == [2, 5]


_FAILING_CAPTURE = """
import sys
import numpy as np
from engines import open_engine

path = sys.argv[1]
engine = open_engine(path)
forward, calls = engine._forward, []

def synchronizing_forward(tensor):
    calls.append(1)
    tensor.sum().item()  # a device->host sync: fine eagerly, illegal while a graph is captured
    return forward(tensor)

engine._forward = synchronizing_forward
batch = np.random.default_rng(0).uniform(-1, 1, (2, 3, 128, 128)).astype(np.float32)
first, second = engine.infer(batch), engine.infer(batch)
with open_engine(path, cuda_graph=False) as eager:
    expected = eager.infer(batch)
assert engine.graph_sizes == [] and list(engine.graph_errors) == [2], engine.graph_errors
assert len(calls) == 3 + 1 + 1 + 1, calls  # warm-ups, the failed capture, then eager twice: no retry
for result in (first, second):
    assert max(float(np.abs(a - b).max()) for a, b in zip(result, expected)) < 1e-2
print("fell back:", engine.graph_errors[2])
"""


@needs_torch_cuda
def test_a_failed_capture_falls_back_to_eager(generator_pt):
    """A real capture failure (a host sync inside the captured forward), in its own process so
    the aborted capture cannot touch the CUDA state of the other tests."""
    result = subprocess.run([sys.executable, "-c", _FAILING_CAPTURE, str(generator_pt)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    print(result.stdout.strip())


# --- ONNX Runtime on CUDA: I/O binding --------------------------------------------------------


@needs_ort_cuda
@pytest.mark.parametrize("model", ["fp32", "fp16"])
def test_ort_io_binding_matches_the_cpu_provider(tiny_onnx, tiny_fp16_onnx, model):
    path, tolerance = (tiny_onnx, TF32_TOLERANCE) if model == "fp32" else (tiny_fp16_onnx, FP16_TOLERANCE)
    with open_engine(path, providers=ORT_CUDA) as gpu, open_engine(path, providers=ORT_CPU) as cpu:
        assert gpu.spec.device == "cuda" and cpu.spec.device == "cpu" and gpu.spec.precision == model
        sizes = [count for count in SIZES if count <= gpu.spec.max_batch]
        worst = 0.0
        for seed, count in enumerate(sizes):
            batch = _batch(count, seed)
            worst = max(worst, _difference(cpu.infer(batch), gpu.infer(batch)))
        print(f"{model}: ORT CUDA (I/O binding) vs CPU max abs difference: {worst:.2e}")
        assert worst < tolerance
        assert sorted(gpu._bindings) == sorted(set(sizes))  # one binding per size, reused
        assert not cpu._bindings
