"""Every registered backend behind the one interface; bad model files are clear errors."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from engines import EngineError, open_engine, suffixes
from engines.metadata import describe, pack_plan, unpack_plan

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


@pytest.fixture(scope="session")
def model_files(tiny_run, tiny_onnx, tmp_path_factory):
    from engines.torch_backend import save_generator
    from trainer import checkpoint
    from trainer.export import metadata_for

    folder = tmp_path_factory.mktemp("engines")
    state = checkpoint.load(tiny_run / "last.ckpt")
    save_generator(folder / "gen.pt", checkpoint.generator_from(state), 128, metadata_for(state))
    files = {".onnx": tiny_onnx, ".pt": folder / "gen.pt", ".ckpt": tiny_run / "last.ckpt"}
    if HAS_TRT and _cuda():
        from engines.tensorrt_build import build_engine

        build_engine(tiny_onnx, folder / "gen.plan", fp16=True, max_batch=4)
        files[".plan"] = folder / "gen.plan"
    return files


def _batch(count: int, size: int = 128) -> np.ndarray:
    rng = np.random.default_rng(count)
    return rng.uniform(-1, 1, (count, 3, size, size)).astype(np.float32)


@pytest.mark.parametrize("suffix", [".onnx", ".pt", ".ckpt",
                                    pytest.param(".plan", marks=pytest.mark.skipif(not (HAS_TRT and _cuda()),
                                                                                     reason="needs tensorrt and an NVIDIA GPU"))])
def test_backend_meets_the_contract(model_files, suffix):
    with open_engine(model_files[suffix]) as engine:
        spec = engine.spec
        assert spec.crop_size == 128 and spec.max_batch >= 2
        restored, occlusion = engine.infer(_batch(2))
        assert restored.shape == (2, 3, 128, 128) and occlusion.shape == (2, 1, 128, 128)
        assert restored.dtype == occlusion.dtype == np.float32
        assert -1 <= restored.min() and restored.max() <= 1
        assert 0 <= occlusion.min() and occlusion.max() <= 1
        with pytest.raises(ValueError):
            engine.infer(_batch(1, 64))
        with pytest.raises(ValueError):
            engine.infer(_batch(1).astype(np.float64))
        with pytest.raises(ValueError):
            engine.infer(_batch(1) * 3)
    engine.close()  # closing twice is fine


def test_onnx_runtime_and_pytorch_agree(model_files):
    batch = _batch(3)
    with open_engine(model_files[".onnx"]) as onnx_engine, open_engine(model_files[".pt"]) as torch_engine:
        onnx_out, torch_out = onnx_engine.infer(batch), torch_engine.infer(batch)
        half = "fp16" in (onnx_engine.spec.precision, torch_engine.spec.precision)  # on a GPU, PyTorch runs fp16
    difference = max(np.abs(a - b).max() for a, b in zip(onnx_out, torch_out))
    print(f"ONNX Runtime vs PyTorch max abs difference: {difference:.2e}")
    assert difference < (3e-2 if half else 1e-3)


@pytest.mark.skipif(not (HAS_TRT and _cuda()), reason="needs tensorrt and an NVIDIA GPU")
def test_tensorrt_fp16_agrees_with_onnx(model_files):
    batch = _batch(4)
    with open_engine(model_files[".onnx"]) as onnx_engine, open_engine(model_files[".plan"]) as plan:
        reference, fast = onnx_engine.infer(batch), plan.infer(batch)
    assert max(np.abs(a - b).max() for a, b in zip(reference, fast)) < 0.05


def test_registry_knows_every_backend():
    assert {".onnx", ".plan", ".engine", ".pt", ".ckpt"} <= set(suffixes())


@pytest.mark.parametrize("suffix", [".onnx", ".plan", ".pt"])
@pytest.mark.parametrize("content", ["missing", "empty", "random"])
def test_bad_model_files_are_clear_errors(tmp_path, suffix, content):
    path = tmp_path / f"bad{suffix}"
    if content == "empty":
        path.write_bytes(b"")
    elif content == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(EngineError) as error:
        open_engine(path)
    assert str(path) in str(error.value) or path.name in str(error.value)


def test_unknown_suffix_is_an_error(tmp_path):
    path = tmp_path / "gen.h5"
    path.write_bytes(b"x")
    with pytest.raises(EngineError, match="unknown engine type"):
        open_engine(path)


def test_onnx_without_our_contract_is_rejected(tmp_path, tiny_onnx):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 128, 128])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 128, 128])])
    foreign = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(foreign))
    with pytest.raises(EngineError, match="no deocc metadata"):
        open_engine(foreign)
    model = onnx.load(str(tiny_onnx))
    entry = next(p for p in model.metadata_props if p.key == "deocc")
    entry.value = json.dumps({**json.loads(entry.value), "crop_size": 256})
    mismatched = tmp_path / "mismatched.onnx"
    onnx.save(model, str(mismatched))
    with pytest.raises(EngineError, match="input must be"):
        open_engine(mismatched)
    # Metadata this app cannot honour: a newer file format, crops cut with another face template,
    # pixels scaled another way. Each would load and restore faces wrongly without a word.
    for change, message in (({"format_version": 99}, "model format 99"),
                            ({"template": [[0.3, 0.4]] * 5}, "another face template"),
                            ({"normalisation": {"channels": "BGR", "layout": "NCHW", "range": [0.0, 1.0]}},
                             "metadata gives pixels as")):
        model = onnx.load(str(tiny_onnx))
        entry = next(p for p in model.metadata_props if p.key == "deocc")
        entry.value = json.dumps({**json.loads(entry.value), **change})
        odd = tmp_path / "odd.onnx"
        onnx.save(model, str(odd))
        with pytest.raises(EngineError, match=message):
            open_engine(odd)


def test_plan_header_round_trips_and_rejects_foreign_plans():
    metadata = describe(128, precision="fp16")
    packed = pack_plan(metadata, b"PLANBYTES")
    assert unpack_plan(packed, "x") == (metadata, b"PLANBYTES")
    with pytest.raises(EngineError):
        unpack_plan(b"\xff\xff\xff\x7f" + b"{}", "x")
    with pytest.raises(EngineError):
        unpack_plan(b"\x05\x00\x00\x00notjs", "x")


def test_pytorch_file_is_never_unpickled(tmp_path):
    """A .pt that holds a pickled object (code) is refused by weights_only loading."""
    import pickle

    class Payload:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(EngineError):
        open_engine(path)
    assert not (tmp_path / "pwned").exists()


def test_a_plan_built_for_another_gpu_or_tensorrt_is_named_as_such():
    """TensorRT itself only logs and returns no engine for a foreign plan; the header says why
    before it is asked. (Loading a real plan is tested above where TensorRT and a GPU exist.)"""
    from engines.metadata import plan_mismatch

    built = {"tensorrt_version": "10.3.0.26", "compute_capability": [9, 0], "gpu": "NVIDIA H100 80GB HBM3"}
    assert plan_mismatch(built, "10.3.0.26", (9, 0), "NVIDIA H100 PCIe") is None
    assert plan_mismatch(built, "10.3.0", (9, 0), "NVIDIA H100") is None  # same release, other build tag
    other_gpu = plan_mismatch(built, "10.3.0.26", (8, 9), "NVIDIA GeForce RTX 4090")
    assert other_gpu == "built for a NVIDIA H100 80GB HBM3 (sm_90), this is a NVIDIA GeForce RTX 4090 (sm_89)"
    other_trt = plan_mismatch(built, "10.5.0.18", (9, 0), "NVIDIA H100")
    assert other_trt == "built for TensorRT 10.3.0.26, this is 10.5.0.18"
    both = plan_mismatch(built, "8.6.1", (7, 5), "Tesla T4")
    assert "TensorRT 10.3.0.26" in both and "sm_75" in both
    assert plan_mismatch({}, "10.5.0", (8, 6), "RTX 3080") is None  # an older header: TensorRT decides


def test_a_random_plan_is_refused_before_tensorrt_is_needed(tmp_path):
    path = tmp_path / "gen.plan"
    path.write_bytes(np.random.default_rng(3).bytes(4096))
    with pytest.raises(EngineError, match="no deocc metadata header"):
        open_engine(path)


def _face_batch(count: int = 8, size: int = 128) -> np.ndarray:
    """Real faces from ../shared/data, resized to the crop: outputs on pictures like the app's."""
    import cv2

    from media import face_files

    crops = [cv2.resize(cv2.imread(str(path)), (size, size), interpolation=cv2.INTER_AREA) for path in face_files(count)]
    return np.stack([c[..., ::-1].transpose(2, 0, 1) for c in crops]).astype(np.float32) / 127.5 - 1


def test_fp16_graph_matches_fp32_in_onnx_runtime(tmp_path, tiny_onnx):
    """The graph TensorRT builds strongly typed: FP16 weights inside, FP32 in and out."""
    import onnx

    from engines.fp16 import graph_precision
    from trainer.export import FP16_TOLERANCE, export_fp16

    shipped = Path(__file__).resolve().parents[1] / "assets" / "deocc_gen.onnx"
    for source in (shipped, tiny_onnx):
        target = tmp_path / f"{source.stem}_fp16.onnx"
        difference = export_fp16(source, target)
        model = onnx.load(str(target))
        assert graph_precision(onnx.load(str(source))) == "fp32" and graph_precision(model) == "fp16"
        assert all(i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for i in [*model.graph.input, *model.graph.output])
        assert sum(n.op_type == "Cast" for n in model.graph.node) == 3  # one in, one per output
        with open_engine(source) as reference, open_engine(target) as half:
            assert half.spec.precision == "fp16"
            faces = _face_batch()
            expected, actual = reference.infer(faces), half.infer(faces)
        on_faces = max(float(np.abs(a - b).max()) for a, b in zip(expected, actual))
        print(f"{source.name}: FP16 vs FP32 max abs difference {difference:.2e} (smooth noise), {on_faces:.2e} (faces)")
        assert on_faces < FP16_TOLERANCE
        assert target.stat().st_size < 0.6 * source.stat().st_size


def test_tensorrt_build_uses_no_api_that_tensorrt_11_removed():
    """TensorRT 11 removed BuilderFlag.FP16 (and every precision flag), platform_has_fast_fp16 and
    NetworkDefinitionCreationFlag.EXPLICIT_BATCH; the build must be strongly typed instead
    (NVIDIA's 'Migrating from TensorRT 10.x to 11.x'). TensorRT itself cannot run here."""
    import ast

    root = Path(__file__).resolve().parents[1] / "engines"
    used = set()
    for path in root.glob("tensorrt*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute):
                used.add(node.attr)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.isidentifier():
                used.add(node.value)  # getattr(trt..., "NAME")
    assert {"create_network", "NetworkDefinitionCreationFlag", "STRONGLY_TYPED"} <= used
    assert not used & {"BuilderFlag", "platform_has_fast_fp16", "platform_has_tf32", "EXPLICIT_BATCH", "FP16"}


@pytest.mark.parametrize("options", [{"max_batch": 0}, {"max_batch": 65}, {"workspace_gb": 0}])
def test_build_engine_refuses_out_of_range_options(options, tiny_onnx, tmp_path):
    from engines.tensorrt_build import build_engine

    with pytest.raises(ValueError, match="must be between"):
        build_engine(tiny_onnx, tmp_path / "gen.plan", **options)
    assert not (tmp_path / "gen.plan").exists()


def test_the_shipped_int8_generator_gives_what_the_float_one_gives_on_this_cpu():
    """The CPU default (static int8) against the float file it was quantised from, on real faces
    aligned as the app aligns them, on whatever CPU runs the tests. x86 CPUs without VNNI (AVX2
    or AVX-512 alone: AMD Zen 2/3, Intel before Ice Lake) sum pairs of uint8 x int8 products in
    16 bits, which saturates with 8-bit weights: there a file quantised that way restored crops
    at about 21 dB from the float one's and flagged 3% of an uncovered crop's pixels as covered
    (weights are quantised to 7 bits since)."""
    import cv2

    from deocc_live.landmarks import FaceLandmarks
    from deocc_live.stages.align import crop_matrix, warp_crop
    from deocc_live.stages.generate import crops_to_batch
    from media import LANDMARKER, face_files

    root = Path(__file__).resolve().parents[1] / "assets"
    crops = []
    with FaceLandmarks(LANDMARKER) as finder:
        for path in face_files(24):
            picture = cv2.imread(str(path))
            found = finder.detect(picture)
            if len(found):
                crops.append(warp_crop(picture, crop_matrix(found[0], 128), 128))
    assert len(crops) >= 16
    psnr, flagged = [], []
    with open_engine(root / "deocc_gen_int8.onnx") as quantised, open_engine(root / "deocc_gen.onnx") as reference:
        assert quantised.spec.precision == "int8"
        for crop in crops:
            batch = crops_to_batch([crop])
            (image, mask), (image_ref, mask_ref) = quantised.infer(batch), reference.infer(batch)
            psnr.append(10 * np.log10(1.0 / max(float(((image - image_ref) ** 2).mean()), 1e-12)))
            flagged.append(float((mask > 0.5).mean()) - float((mask_ref > 0.5).mean()))
    assert np.mean(psnr) > 30.0 and min(psnr) > 26.0, f"int8 against float: {np.mean(psnr):.1f} dB (lowest {min(psnr):.1f})"
    assert max(flagged) < 0.01, f"the int8 file takes {max(flagged):.1%} more of an uncovered face for covered"


ZEN3_FLAGS = ("flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr "
              "sse sse2 ht syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl nonstop_tsc cpuid "
              "extd_apicid tsc_known_freq pni pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt aes "
              "xsave avx f16c rdrand hypervisor lahf_lm cmp_legacy cr8_legacy abm sse4a misalignsse 3dnowprefetch "
              "osvw topoext invpcid_single ssbd ibrs ibpb stibp vmmcall fsgsbase bmi1 avx2 smep bmi2 invpcid rdseed "
              "adx smap clflushopt clwb sha_ni xsaveopt xsavec xgetbv1 xsaves clzero xsaveerptr rdpru wbnoinvd arat "
              "npt nrip_save umip pku ospke vaes vpclmulqdq rdpid fsrm")


def test_the_cpu_default_is_the_int8_file_only_where_int8_runs_on_vnni():
    """The app's CPU default: int8 where the CPU has VNNI, fp32 on an x86 CPU without it (an AMD
    EPYC Zen 3 here: int8 with 7-bit weights is slower than fp32 there, README). The flag lines
    are real ones: AMD EPYC Zen 3 (AVX2 only), Intel Xeon Ice Lake (AVX-512 VNNI), Intel Core
    Alder Lake (AVX-VNNI without AVX-512)."""
    from deocc_live.assets import default_generator
    from engines import cpu_int8_is_fast, has_cuda_provider, vnni_flag

    ice_lake = ZEN3_FLAGS.replace("vaes vpclmulqdq", "avx512f avx512dq avx512cd avx512bw avx512vl avx512vbmi "
                                  "umip pku ospke avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni avx512_bitalg")
    alder_lake = ZEN3_FLAGS.replace("sha_ni", "sha_ni avx_vnni")
    processors = f"processor\t: 0\nvendor_id\t: AuthenticAMD\n{ZEN3_FLAGS}\n\nprocessor\t: 1\n{ZEN3_FLAGS}\n"
    assert vnni_flag(processors) is False
    assert vnni_flag(ice_lake) is True and vnni_flag(alder_lake) is True
    assert vnni_flag("processor\t: 0\nmodel name\t: Apple M2\n") is None
    chosen = default_generator().name
    if has_cuda_provider():
        assert chosen == "deocc_gen.onnx"
    else:
        assert chosen == ("deocc_gen_int8.onnx" if cpu_int8_is_fast() else "deocc_gen.onnx"), chosen
    here = Path("/proc/cpuinfo")
    if here.is_file() and vnni_flag(here.read_text()) is False:  # this machine: no VNNI
        assert chosen == "deocc_gen.onnx"
