"""The engine's own subcommands: protect, evaluate, zoo."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from mmguard_core.config import FAMILY_NAMES, PRESETS, ConfigError, parse_epsilon, preset
from mmguard_core.data.archive import check_output_path, check_result_file, is_inside, write_result_file
from mmguard_core.data.formats import FIELD_ROLES


def _number_type(convert: Any, kind: str, ok: Any, requirement: str) -> Any:
    """An argparse type: `convert` the text (else "is not KIND"), then refuse values failing `ok`."""
    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {kind}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{text} {requirement}")
        return value

    return parse


positive_int = _number_type(int, "a whole number", lambda v: v >= 1, "must be at least 1")
positive_float = _number_type(float, "a number", lambda v: math.isfinite(v) and v > 0, "must be a number above 0")
share = _number_type(float, "a number", lambda v: 0.0 <= v <= 1.0, "must be between 0 and 1")


def json_safe(value: Any) -> Any:
    """Infinite PSNR (identical images) is written as null: JSON has no Infinity."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


class ProgressBar:
    """tqdm bar that follows (done, total, stage) callbacks; silent when stderr is not a terminal."""

    def __init__(self, quiet: bool = False) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self.bar = None
        self.stage = None
        self.quiet = quiet

    def __call__(self, done: int, total: int, stage: str) -> None:
        if self.quiet:
            return
        if stage != self.stage or self.bar is None or self.bar.total != total:
            if self.bar is not None:
                self.bar.close()
            self.bar = self._tqdm(total=total, desc=stage, unit="step", leave=False, file=sys.stderr)
            self.stage = stage
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=list(PRESETS), default="balanced",
                        help="intensity: fast | balanced | strong (default balanced)")
    parser.add_argument("--config", type=Path, help="a JSON object of ProtectionConfig fields, applied over the preset (flags win)")
    parser.add_argument("--method", help="mmguard (default) or a baseline: random, em_image, classwise")
    parser.add_argument("--epsilon", help="L-inf bound, e.g. 8/255 (default) or 0.03")
    parser.add_argument("--trigger-length", type=int, help="trigger words (0 = no trigger)")
    parser.add_argument("--trigger-placement", choices=["instruction", "caption_prefix", "off"])
    parser.add_argument("--trigger-position", choices=["twice", "both", "prefix", "suffix", "split"],
                        help="where the trigger goes in the question (default twice: a whole trigger of other "
                             "words on each side; both: the same words on each side)")
    parser.add_argument("--trigger-vocabulary", choices=["shared", "distinct", "mixed"],
                        help="mixed (default: rare words, then everyday ones), shared everyday words (kept by word "
                             "strippers) or distinct rare words")
    parser.add_argument("--trigger-trials", type=int, metavar="N",
                        help="race N trigger assignments in a simulated attack and keep the one it learns "
                             "least from (default 1: no race)")
    parser.add_argument("--noise-structure", choices=["auto", "sample", "answer", "cluster"])
    parser.add_argument("--surrogate", action="append", default=None, metavar="FAMILY:PATH",
                        help="a local checkpoint, e.g. llava:/models/llava-1.5-7b-hf, or zoo:FAMILY[@SEED] (@2: that zoo family pretrained with seed 2); repeatable")
    parser.add_argument("--zoo-size", choices=["test", "small", "small-fillers"], help="tiny zoo size for zoo surrogates")
    parser.add_argument("--device", choices=["cpu", "cuda", "auto"], help="default auto: cuda when there is one")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--threads", type=positive_int, help="torch CPU threads (default 1)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--verify", action=argparse.BooleanOptionalAction, default=None,
                        help="after protecting, fine-tune a held-out model on clean vs protected samples and "
                             "report the protection (default: on for balanced and strong, off for fast)")
    parser.add_argument("--verify-victim", metavar="SPEC",
                        help="the held-out model: auto (default), cnn, zoo:FAMILY or FAMILY:PATH")


def config_from_args(args: argparse.Namespace):
    from mmguard_core.config import ProtectionConfig

    overrides = {
        "method": args.method,
        "epsilon": parse_epsilon(args.epsilon) if args.epsilon is not None else None,
        "trigger_length": args.trigger_length,
        "trigger_placement": args.trigger_placement,
        "trigger_position": getattr(args, "trigger_position", None),
        "trigger_vocabulary": getattr(args, "trigger_vocabulary", None),
        "trigger_trials": getattr(args, "trigger_trials", None),
        "noise_structure": args.noise_structure,
        "surrogates": args.surrogate,
        "zoo_size": args.zoo_size,
        "device": args.device,
        "dtype": args.dtype,
        "threads": args.threads,
        "seed": args.seed,
        "verify": getattr(args, "verify", None),
        "verify_victim": getattr(args, "verify_victim", None),
    }
    if not args.config:
        return preset(args.preset, **overrides)
    # as a job request does: the preset, the file's fields over it, then the flags over both (a full
    # config, e.g. one copied from a report, leaves nothing of the preset)
    try:
        text = args.config.read_text(encoding="utf-8-sig")  # a byte-order mark is fine (Windows editors)
    except OSError as exc:
        raise ConfigError(f"--config: cannot read {args.config}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:  # e.g. UTF-16, what PowerShell's > writes
        raise ConfigError(f"--config: {args.config} is not UTF-8 text; save it as UTF-8") from exc
    from_file = ProtectionConfig.from_json(text)  # checks the file on its own first: its errors name it
    fields = {name: getattr(from_file, name) for name in json.loads(text)}
    fields.update({name: value for name, value in overrides.items() if value is not None})
    return preset(args.preset, **fields)


def cmd_protect(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from mmguard_core.engine.ensemble import resolve_device
    from mmguard_core.pipeline import run_protection

    try:
        resolve_device(config.device)
    except RuntimeError as exc:  # cuda asked for on a machine without one: a usage error, before any work
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:  # a run can take hours: refuse an output or report path it could not write before starting
        check_protect_paths(Path(args.input), Path(args.output), Path(args.report) if args.report else None)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bar = ProgressBar(quiet=args.quiet)
    try:
        fields = dict(args.field or [])
        report = run_protection(args.input, args.output, config, progress=bar, skip_bad=args.skip_bad,
                                format=args.format, fields=fields or None)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:  # DatasetError, ConfigError, ModelLoadError
        bar.close()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, OSError) as exc:  # a model that failed, a full disk, a folder gone read-only
        bar.close()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    bar.close()
    report = json_safe(report)
    print(summary_text(report))
    if args.report:
        try:
            write_result_file(Path(args.report), json.dumps(report, indent=2))
        except OSError as exc:  # the protected copy is written; say so rather than lose it in a traceback
            print(f"error: could not write the report to {args.report}: {exc.strerror or exc} "
                  f"(the protected data is in {args.output})", file=sys.stderr)
            return 1
    return 0


def check_protect_paths(source: Path, output: Path, report: Path | None) -> None:
    """OSError / ValueError, before any work, for paths the run could only refuse at its end: an
    output it cannot write, one inside the input (or holding it), a report that is the output or
    lies inside it (it would replace the protected archive, or fail once the output is a folder)."""
    check_output_path(output)
    if source.exists() and (is_inside(output, source) or is_inside(source, output)):
        what = "the input" if source.is_file() else "inside the input folder"
        raise ValueError(f"output {output} must not be {what} {source} (nor hold it); write it elsewhere")
    if report is not None:
        check_result_file(report, "--report")
        if is_inside(report, output) or (source.is_file() and is_inside(report, source)):
            raise ValueError(f"--report {report} would overwrite the protected output or the input; name another file")


def field_choice(text: str) -> tuple[str, str]:
    """argparse type of --field: ROLE=NAME with a role the readers know."""
    role, sep, name = text.partition("=")
    if not sep or not name or role not in FIELD_ROLES:
        raise argparse.ArgumentTypeError(f"{text!r}: use ROLE=NAME with ROLE one of {', '.join(FIELD_ROLES)}, "
                                         "e.g. answer=label")
    return role, name


def summary_text(report: dict) -> str:
    s = report["summary"]
    t = report["timings"]
    groups = report.get("groups") or {}
    lines = [
        f"protected {report['dataset']['samples']} samples ({report['dataset']['kind']}, {report['dataset']['layout']}) "
        f"-> {report['output']}",
        f"  method {report['method']}, surrogates: {', '.join(report['surrogates'])}",
        f"  image: L-inf max {s['linf_max'] * 255:.1f}/255 (bound {s['epsilon'] * 255:.1f}/255), "
        f"PSNR mean {fmt(s['psnr_mean'])} dB (min {fmt(s['psnr_min'])}), SSIM mean {s['ssim_mean']:.4f}",
    ]
    if groups:
        noise_line = (f"  noise shared per {groups['structure']} ({groups['count']} groups)"
                      if groups.get("shared_noise") else f"  {groups['count']} {groups['structure']} groups")
        sample_noise = report.get("sample_noise") or {}
        if sample_noise.get("objective") == "targeted":
            aim = "the nearest-looking group's" if sample_noise.get("target_choice") == "nearest" else "the next group's"
            noise_line += f"; per-sample noise targeted at {aim} answer"
        lines.append(noise_line)
        trig = report["trigger"]
        if trig["samples_with_trigger"]:
            examples = ", ".join(f"{k!r}: {v!r}" for k, v in list(groups["triggers"].items())[:4])
            lines.append(f"  trigger ({trig['placement']}, {trig['position']}) in {trig['samples_with_trigger']} "
                         f"samples, e.g. {examples}")
    verification = report.get("verification")
    if verification:
        lines.append("  " + verification_text(verification))
    lines.append(f"  time {t['total']:.1f} s (surrogate passes {t['surrogate_pass_share'] * 100:.0f} % of engine time)")
    lines.extend(f"  note: {w}" for w in report.get("warnings", []))
    return "\n".join(lines)


def verification_text(v: dict) -> str:
    """One line (two when there is no verdict) on the held-out check of the report."""
    victim = v.get("victim", "?")
    if v.get("status") != "done":
        return f"verification ({victim}) skipped: {v.get('reason', '')}"
    if v.get("protection") is None:
        return f"verification ({victim}): no verdict: {v.get('reason', '')}"
    cms = ", ".join(f"{c['label']} {c['protection']:.2f}" for c in v["countermeasures"].values()
                    if c.get("protection") is not None)
    return (f"verification on held-out {victim} ({v['train_samples']} train / {v['test_samples']} test samples): "
            f"protection {v['protection']:.2f} (clean-trained accuracy {v['acc_clean_trained']:.2f}, "
            f"protected-trained {v['acc_protected_trained']:.2f}, floor {v['floor']:.2f})"
            + (f"; after {cms}" if cms else "") + _per_seed(v))


def _per_seed(v: dict) -> str:
    runs = v.get("runs") or []
    if len(runs) < 2:
        return ""
    each = ", ".join("–" if r.get("protection") is None else f"{r['protection']:.2f}" for r in runs)
    return f"; from the mean accuracies of {len(runs)} victim seeds (per seed {each})"


def fmt(value) -> str:
    return "inf" if value is None else f"{value:.2f}"


def cmd_zoo_build(args: argparse.Namespace) -> int:
    from mmguard_core.models.zoo import build_zoo

    families = args.family or None
    try:
        paths = build_zoo(cache_dir=args.cache_dir, size=args.size, families=families, seed=args.seed,
                          progress=None if args.quiet else lambda *a: print(*a, file=sys.stderr))
    except ValueError as exc:  # a family the zoo cannot build
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a cache folder that is a file, read-only, or full
        print(f"error: {args.cache_dir or 'the zoo cache'}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    for family, path in paths.items():
        print(f"{family}\t{path}")
    return 0


def register(subparsers) -> None:
    protect = subparsers.add_parser("protect", help="protect a dataset (folder, .zip or .tar)")
    protect.add_argument("input", type=Path, help="dataset folder, .zip or .tar with images + data.jsonl")
    protect.add_argument("-o", "--output", type=Path, required=True,
                         help="output folder, or a .zip / .tar path to write an archive")
    protect.add_argument("--report", type=Path, help="write the JSON report here")
    protect.add_argument("--skip-bad", action="store_true", help="drop bad samples instead of refusing the dataset")
    protect.add_argument("--format", help="input format, when auto-detection is ambiguous: "
                         "jsonl, csv, llava, coco, webdataset, parquet")
    protect.add_argument("--field", action="append", metavar="ROLE=NAME", type=field_choice,
                         help="field/column name for a role (image, question, answer, caption), e.g. answer=label")
    protect.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_config_arguments(protect)
    protect.set_defaults(func=cmd_protect)

    zoo = subparsers.add_parser("zoo", help="the offline tiny surrogate zoo")
    zoo_sub = zoo.add_subparsers(dest="zoo_command", metavar="ACTION")
    build = zoo_sub.add_parser("build", help="pretrain and cache the tiny zoo models")
    build.add_argument("--size", choices=["test", "small", "small-fillers"], default="small")
    build.add_argument("--family", action="append", choices=FAMILY_NAMES, help="only this family (repeatable)")
    build.add_argument("--cache-dir", type=Path, default=os.environ.get("MMGUARD_CACHE_DIR"))
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("-q", "--quiet", action="store_true")
    build.set_defaults(func=cmd_zoo_build)

    register_evaluate(subparsers)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from mmguard_core.evaluate import cmd_evaluate as run

    return run(args)


def register_evaluate(subparsers) -> None:
    parser = subparsers.add_parser("evaluate", help="fine-tune a victim on clean vs protected data and compare")
    parser.add_argument("--clean-train", type=Path, required=True)
    parser.add_argument("--protected-train", type=Path, required=True)
    parser.add_argument("--test", type=Path, required=True, help="clean test split")
    parser.add_argument("--victim", default="zoo:llava", help="zoo:FAMILY[@SEED], FAMILY:PATH or cnn (the non-transformer VQA model)")
    parser.add_argument("--zoo-size", choices=["test", "small", "small-fillers"], default="small")
    parser.add_argument("--recipe", choices=["full", "lora"], default="full")
    parser.add_argument("--freeze-vision", action="store_true")
    parser.add_argument("--epochs", type=positive_float, default=3.0)
    parser.add_argument("--lr", type=positive_float, default=1e-3)
    parser.add_argument("--batch-size", type=positive_int, default=16)
    parser.add_argument("--seed", type=int, action="append", help="repeat for several seeds")
    parser.add_argument("--threads", type=positive_int, default=1)
    parser.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto",
                        help="where the victims are fine-tuned (default auto: cuda when there is one)")
    parser.add_argument("--countermeasure", action="append", metavar="NAME",
                        help="apply to the protected train split before fine-tuning (repeat for several; "
                             "none, jpeg90, jpeg75, jpeg50, downscale, blur, noise, iss, augment, strip_rare, "
                             "strip_vocab)")
    parser.add_argument("--protect-fraction", type=share, action="append", metavar="F",
                        help="also train on a mix where only this share is protected (repeat; e.g. 0.5)")
    parser.add_argument("--countermeasure-reference", action="store_true",
                        help="also fine-tune on the clean split with each countermeasure (second reference)")
    parser.add_argument("-o", "--output", type=Path, help="write the JSON result here")
    parser.set_defaults(func=cmd_evaluate)
