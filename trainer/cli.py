"""`deocc-train`: synth, fit, eval, export, build-engine. Heavy imports happen inside each
command so that --help is instant; errors print one line and exit non-zero."""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import MISSING, fields
from pathlib import Path

from deocc_live.settings import OneLineParser, Setting
from trainer.quantize import WEIGHTS  # a light module: its heavy imports are inside its functions


def _ranged(kind, name: str, low, high):
    """An argparse type that converts and range-checks: the app's settings check (one line)."""
    return Setting(name, kind, None, low, high, "").parse


def _add_dataclass_options(parser: argparse.ArgumentParser, cls, skip=()):
    """One option per config field, typed and range-checked from the field's default and metadata
    (a declarative table, not handlers); the help says what it does and its default."""
    for field in fields(cls):
        if field.name in skip:
            continue
        flag = "--" + field.name.replace("_", "-")
        help_text, (low, high), choices = field.metadata["help"], field.metadata["range"], field.metadata["choices"]
        default = field.default
        if default is MISSING:
            parser.add_argument(flag, type=str, required=True, help=help_text)
        elif isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default,
                                help=f"{help_text} (default: {'on' if default else 'off'})")
        elif default is None or isinstance(default, str):
            parser.add_argument(flag, type=str, default=default, choices=choices,
                                help=help_text + (f" (default: {default})" if default else ""))
        else:
            kind = type(default)
            parser.add_argument(flag, type=_ranged(kind, kind.__name__, low, high), default=default,
                                metavar=field.name.upper(), help=f"{help_text} (default: {default})")


def _config(cls, args):
    return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})


def cmd_synth(args):
    from trainer.configs import SynthConfig
    from trainer.synth import run

    summary = run(_config(SynthConfig, args))
    counts = summary["counts"]
    print(f"{summary['faces']} faces: train {counts['train']}, validation {counts['validation']}, "
          f"test {counts['test']}; skipped {summary['skipped']} (no face {counts['no_face']}, "
          f"too small {counts['too_small']}, unreadable {counts['unreadable']})")


def cmd_pack(args):
    from trainer.configs import PackConfig
    from trainer.pack import write_pack

    summary = write_pack(_config(PackConfig, args))
    pack = summary["pack"]
    print(f"{pack['out']}: {pack['counts'].get('train', 0)} training faces, {pack['counts'].get('validation', 0)} "
          f"validation pairs; {pack['faces_bytes'] / 2**20:.1f} MiB of faces, "
          f"{pack['occluder_bytes'] / 2**20:.1f} MiB of occluders")


def cmd_fit(args):
    from trainer.configs import FitConfig
    from trainer.fit import run

    result = run(_config(FitConfig, args))
    print(json.dumps(result))


def cmd_eval(args):
    from trainer.configs import EvalConfig
    from trainer.evaluate import run

    report = run(_config(EvalConfig, args))
    print(report["markdown"])


def cmd_memory_eval(args):
    from trainer.configs import MemoryEvalConfig
    from trainer.memory_eval import run

    report = run(_config(MemoryEvalConfig, args))
    print(report["markdown"])
    print(f"wrote {args.out}/memory.json, memory.md and memory_strip.jpg")


def cmd_e2e(args):
    from trainer.configs import EndToEndConfig
    from trainer.e2e import run

    report = run(_config(EndToEndConfig, args))
    print(report["markdown"])
    print(f"wrote {args.out}/e2e.json, e2e.md, e2e_grid.jpg and e2e_real_panel.jpg")


def cmd_finder(args):
    from trainer.configs import FinderConfig
    from trainer.finder import fit

    result = fit(_config(FinderConfig, args))
    print(f"wrote {args.out}/finder.onnx: on validation windows, faces found {result['faces_found']:.1%}, "
          f"non-faces rejected {result['non_faces_rejected']:.1%}, points off by {result['point_error_eyes']:.3f} eye distances")


def cmd_finder_labels(args):
    from trainer.configs import FinderLabelsConfig
    from trainer.finder import label_real

    result = label_real(_config(FinderLabelsConfig, args))
    print(f"wrote {args.out}: {result['photos']} photos, {result['with_one_face']} with one face found")


def cmd_misalign(args):
    from trainer.configs import MisalignConfig
    from trainer.misalign import run

    result = run(_config(MisalignConfig, args))
    summary = ", ".join(f"{k} {v['median']:+.4f} (90% within {v['p90_abs_dev']:.4f})" for k, v in result["summary"].items())
    print(f"wrote {args.out}: {len(result['samples'])} crops; the tracker missed {result['missed']} of "
          f"{result['covered_faces']} covered faces; {summary}")


def _outputs_apart(inputs: list[tuple[str, str | None]], outputs: dict[str, tuple[str | None, str]]) -> None:
    """Before any work: each output (option: (path, the suffix it must have)) has its suffix and is
    none of the inputs nor another output, so that no run writes over what it reads or leaves a
    file it then rejects."""
    from engines.atomic import same_file

    given = [(option, path, suffix) for option, (path, suffix) in outputs.items() if path]
    for index, (option, path, suffix) in enumerate(given):
        if Path(path).suffix.lower() != suffix:
            raise ValueError(f"{option} must name a {suffix} file, got {path}")
        for other, source in inputs:
            if source and same_file(path, source):
                raise ValueError(f"{option} is {other} ({source}): it would be overwritten; choose another path")
        for other, other_path, _suffix in given[:index]:
            if same_file(path, other_path):
                raise ValueError(f"{other} and {option} name the same file ({path})")


def cmd_export(args):
    from trainer.export import export_onnx

    _outputs_apart([("--ckpt", args.ckpt), ("--eval-report", args.eval_report), ("--e2e-report", args.e2e_report)],
                   {"--onnx": (args.onnx, ".onnx"), "--fp16": (args.fp16, ".onnx"), "--pt": (args.pt, ".pt"),
                    "--card": (args.card, ".md")})
    if args.card and not args.eval_report:
        raise ValueError("--card needs --eval-report")
    report = json.loads(open(args.eval_report).read()) if args.eval_report else None
    evaluation = None
    if report:
        evaluation = {"images": report["images"], "split": report["split"], "metrics": report["metrics"],
                      "gain_over_telea_db": report["gain_over_telea_db"]}
    result = export_onnx(args.ckpt, args.onnx, opset=args.opset, check=not args.no_check, evaluation=evaluation)
    if args.fp16:
        from trainer.export import export_fp16

        difference = export_fp16(args.onnx, args.fp16)
        print(f"wrote {args.fp16}: FP16 inside, FP32 in and out; max abs difference to FP32 {difference:.2e}")
    if args.pt:
        from engines.torch_backend import save_generator
        from trainer import checkpoint
        from trainer.export import metadata_for

        state = checkpoint.load(args.ckpt)
        save_generator(args.pt, checkpoint.generator_from(state), int(state["model"]["size"]), metadata_for(state, evaluation))
        print(f"wrote {args.pt} (PyTorch weights and metadata)")
    if args.card:
        from trainer import checkpoint
        from trainer.card import write_card

        end_to_end = json.loads(open(args.e2e_report).read()) if args.e2e_report else None
        write_card(checkpoint.load(args.ckpt), report, args.onnx, args.card, end_to_end=end_to_end)
    print(f"wrote {args.onnx}: crop {result['crop_size']}px, max abs difference to torch "
          f"{result['max_abs_diff']:.2e}")


def cmd_quantize(args):
    from trainer.quantize import quantize

    _outputs_apart([("--onnx", args.onnx)], {"--out": (args.out, ".onnx")})
    result = quantize(args.onnx, args.data, args.out, count=args.count, percentile=args.percentile,
                      float_outputs=args.float_outputs, weights=args.weights)
    ranges = "their extremes" if result["percentile"] >= 100 else f"the {result['percentile']}th percentile"
    kept = f"; in float: {', '.join(result['float'])}" if result["float"] else ""
    print(f"wrote {result['out']} (int8, calibrated on {result['calibration_crops']} validation crops, "
          f"activation ranges at {ranges}{kept})")


def cmd_refine(args):
    from trainer.configs import RefineConfig
    from trainer.refine import run

    result = run(_config(RefineConfig, args))
    psnr = result["validation_psnr_half"]
    print(f"wrote {result['out']}: {result['steps']} refiner steps; validation covered PSNR at half size "
          f"{psnr['generator']:.3f} -> {psnr['refined']:.3f} dB")


def cmd_average(args):
    from trainer.checkpoint import average

    _outputs_apart([("--ckpt", path) for path in args.ckpt], {"--out": (args.out, ".ckpt")})
    state = average(args.ckpt, args.out)
    runs = ", ".join(f"step {run['step']:,} (seed {run['seed']})" for run in state["averaged"])
    print(f"wrote {args.out}: the mean of {len(state['averaged'])} generators: {runs}")


def cmd_build_engine(args):
    from engines.tensorrt_build import build_engine

    result = build_engine(args.onnx, args.out, fp16=args.fp16, max_batch=args.max_batch)
    print(f"wrote {args.out}: {result}")


def build_parser() -> argparse.ArgumentParser:
    from trainer.configs import (EndToEndConfig, EvalConfig, FinderConfig, FinderLabelsConfig, FitConfig,
                                  MemoryEvalConfig, MisalignConfig, PackConfig, RefineConfig, SynthConfig)

    parser = OneLineParser(prog="deocc-train", description="Train deocc-live's generator.")
    sub = parser.add_subparsers(dest="command", required=True)

    # The commands whose options are a config dataclass: (name, help, config, handler).
    for name, text, config, handler in (
        ("synth", "write aligned training pairs from faces and occluders", SynthConfig, cmd_synth),
        ("misalign", "record how the app's crops move when landmarks come from covered faces (fit replays "
                     "these errors)", MisalignConfig, cmd_misalign),
        ("pack", "a pairs folder -> a small training pack (WebP crops, the landmarks occluders are placed by, the "
                 "training occluders) to carry to a GPU machine; fit --data takes it", PackConfig, cmd_pack),
        ("fit", "train the generator", FitConfig, cmd_fit),
        ("refine", "train the generator's refiner (a second look at its fill at half size, on the squared error) "
                   "with the generator frozen", RefineConfig, cmd_refine),
        ("eval", "metrics on the test split: input, Telea, ours", EvalConfig, cmd_eval),
        ("e2e", "quality as a user meets it: whole test-split pictures through the app, occluders placed as "
                "the trainer never does, a clip and real photos", EndToEndConfig, cmd_e2e),
        ("memory-eval", "the face memory on test-split clips (a face seen uncovered, then covered): "
                        "covered-face quality with and without it", MemoryEvalConfig, cmd_memory_eval),
        ("finder-labels", "MediaPipe's five points on real masked photos (the finder's labels)", FinderLabelsConfig,
         cmd_finder_labels),
        ("finder", "train the finder: the app's own detector of covered faces MediaPipe misses", FinderConfig,
         cmd_finder),
    ):
        command = sub.add_parser(name, help=text)
        _add_dataclass_options(command, config)
        command.set_defaults(handler=handler)

    export = sub.add_parser("export", help="checkpoint -> ONNX with metadata, parity-checked")
    export.add_argument("--ckpt", required=True, help="training checkpoint (its EMA weights are exported)")
    export.add_argument("--onnx", required=True, help="ONNX file to write")
    export.add_argument("--opset", type=_ranged(int, "opset", 17, 23), default=17, help="ONNX opset, 17-23 (default: 17)")
    export.add_argument("--no-check", action="store_true", help="skip the parity check against torch (default: checked)")
    export.add_argument("--eval-report", help="eval.json from `deocc-train eval`: its summary goes into the metadata")
    export.add_argument("--fp16", metavar="PATH", help="also write the FP16 graph (FP32 in and out) that "
                        "TensorRT builds strongly typed; checked against FP32 in ONNX Runtime")
    export.add_argument("--pt", help="also write a PyTorch generator file (.pt) for `deocc-live --engine`")
    export.add_argument("--card", help="also write the model card (Markdown) here; needs --eval-report")
    export.add_argument("--e2e-report", help="e2e.json from `deocc-train e2e`: the card reports it too")
    export.set_defaults(handler=cmd_export)

    quantize = sub.add_parser("quantize", help="ONNX -> int8 ONNX, calibrated on real face crops")
    quantize.add_argument("--onnx", required=True, help="FP32 generator exported by `deocc-train export`")
    quantize.add_argument("--data", required=True, help="pairs folder (its validation split calibrates)")
    quantize.add_argument("--out", required=True, help="int8 ONNX file to write")
    quantize.add_argument("--count", type=_ranged(int, "count", 1, 100000), default=256,
                          help="validation crops to calibrate on (default: 256)")
    quantize.add_argument("--percentile", type=_ranged(float, "percentile", 90.0, 100.0), default=99.99,
                          help="activation ranges at this percentile of the calibration's absolute values, 90-100; "
                               "100: their extremes (default: 99.99)")
    quantize.add_argument("--float-outputs", action=argparse.BooleanOptionalAction, default=True,
                          help="keep the convolutions that make the outputs in float (default: on)")
    quantize.add_argument("--weights", choices=WEIGHTS, default="s7",
                          help="weights as int8 in 7 bits (s7), which every x86 CPU computes exactly; int8 in 8 bits "
                               "(s8), which x86 CPUs without VNNI (AVX2 or AVX-512 alone) saturate; or uint8 (u8), "
                               "exact everywhere but slower where VNNI is (default: s7)")
    quantize.set_defaults(handler=cmd_quantize)

    average = sub.add_parser("average", help="checkpoints -> one whose generator weights are their mean (runs "
                                             "resumed from one checkpoint with different seeds)")
    average.add_argument("--ckpt", nargs="+", required=True, help="two or more checkpoints of the same shape")
    average.add_argument("--out", required=True, help="checkpoint to write")
    average.set_defaults(handler=cmd_average)

    engine = sub.add_parser("build-engine", help="ONNX -> TensorRT plan with our metadata header")
    engine.add_argument("--onnx", required=True, help="generator exported by `deocc-train export` (FP32, or its --fp16 graph)")
    engine.add_argument("--out", required=True, help="plan file to write (.plan)")
    engine.add_argument("--fp16", action=argparse.BooleanOptionalAction, default=True,
                        help="compute in FP16 (an FP32 graph is converted first; FP32 in and out) (default: on)")
    engine.add_argument("--max-batch", type=_ranged(int, "max_batch", 1, 64), default=4,
                        help="most faces per call the plan takes, 1-64 (default: 4)")
    engine.set_defaults(handler=cmd_build_engine)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError, RuntimeError, KeyError) as error:
        if os.environ.get("DEOCC_DEBUG"):
            raise
        print(f"deocc-train {args.command}: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
