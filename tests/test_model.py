"""The generator network itself: training steps that must not crash on any x86 CPU, and the
strided 1x1 convolution that avoids oneDNN's faulty kernel computing exactly what a strided one does."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engines.network import Generator, StridedPointwise

ROOT = Path(__file__).resolve().parents[1]

# Backward passes of the narrow generator in channels-last, fp32 and bf16 autocast: on AMD EPYC
# (and AVX-512 Intel CPUs capped below AMX) oneDNN's strided 1x1 weight-gradient kernel corrupted
# the heap here. Run in a child so that a crash fails this test instead of killing the suite.
TRAINING_STEPS = """
import torch
from engines.network import Generator
torch.manual_seed(0)
for width in (0.5, 0.25, 1.0):
    g = Generator(width, 2).to(memory_format=torch.channels_last)
    for amp in (False, True):
        for _ in range(2):
            x = torch.randn(4, 3, 128, 128).contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                restored, occlusion = g(x)
            (restored.float().abs().mean() + occlusion.float().mean()).backward()
print("trained")
"""


@pytest.mark.parametrize("isa", ["", "AVX512_CORE", "AVX512_CORE_VNNI", "AVX512_CORE_BF16", "AVX2"])
def test_channels_last_training_steps_do_not_crash(isa):
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": isa} if isa else {k: v for k, v in os.environ.items()
                                                                  if k != "ONEDNN_MAX_CPU_ISA"}
    result = subprocess.run([sys.executable, "-c", TRAINING_STEPS], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0 and "trained" in result.stdout, (result.returncode, result.stderr[-2000:])


@pytest.mark.parametrize("size", [128, 65, 8])
def test_strided_pointwise_equals_a_strided_convolution(size):
    torch.manual_seed(1)
    ours = StridedPointwise(8, 16)
    reference = torch.nn.Conv2d(8, 16, 1, 2, bias=False)
    reference.weight.data.copy_(ours.weight.data)
    x = torch.randn(2, 8, size, size, requires_grad=True)
    y_ours, y_reference = ours(x), reference(x)
    assert y_ours.shape == y_reference.shape
    torch.testing.assert_close(y_ours, y_reference)
    grad = torch.randn_like(y_ours)
    (x_grad,) = torch.autograd.grad(y_ours, x, grad)
    (x_grad_reference,) = torch.autograd.grad(y_reference, x, grad)
    torch.testing.assert_close(x_grad, x_grad_reference)


def test_generator_keeps_its_state_dict_names():
    """Checkpoints written before the strided 1x1 change still load."""
    names = set(Generator(1.0, 2).state_dict())
    assert "down.0.skip.0.weight" in names and "down.3.skip.1.running_mean" in names
    state = torch.load(ROOT / "trainer" / "resume" / "main.ckpt", map_location="cpu", weights_only=False)
    Generator(state["model"]["width"], state["model"]["bottleneck_blocks"]).load_state_dict(state["generator_ema"])
