"""Benchmark data: tasks the zoo victims have NOT learned in pretraining.

The zoo is pretrained on the synthetic colour/shape/count/position/texture questions, so a victim
already answers "what color is the shape?" before any fine-tuning; protecting that data could not
show anything. The benchmark therefore asks the colour question with new answer words (a code word
per colour: red -> apple, ...): the visual feature is one the victim can already see (easy to
learn from clean data) but the mapping must be learned from the released data. `contrast` 1.0 gives
the easy, saturated-colour task; 0.3 a subtler one; `color@C` any contrast C in (0, 1] (at 0.1 two
colours differ by 9-23 of 255 levels in their most different channel, the size of an 8/255 perturbation:
where the image noise can compete with the true feature at all).
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from mmguard_core import synth

ROOT = Path(__file__).resolve().parent.parent
# what makes a figure: the engine and the benchmark scripts (the data, victims and recipes live here)
CODE_FOLDERS = ("mmguard_core", "benchmarks")
PACKAGES = ("torch", "transformers", "peft", "numpy", "pillow")

CODEWORDS = {"red": "apple", "green": "house", "blue": "river", "yellow": "window", "purple": "tree",
             "orange": "book"}
TASKS = {"easy": 1.0, "subtle": 0.3}
TRAIN_SEED, TEST_SEED = 101, 202  # benchmark seeds (< 10_000; the zoo pretrains on 10_000+)


def codeword_samples(n: int, seed: int, contrast: float, image_size: int = 32) -> list[synth.SynthSample]:
    samples = synth.generate("color", n, seed, image_size=image_size, contrast=contrast)
    for sample in samples:
        sample.answer = CODEWORDS[sample.answer]
    return samples


def task_contrast(task: str) -> float:
    """`easy`, `subtle` or `color@C` -> the colour contrast it renders at."""
    if task in TASKS:
        return TASKS[task]
    name, _, value = task.partition("@")
    try:
        contrast = float(value)
    except ValueError:
        contrast = -1.0
    if name != "color" or not 0 < contrast <= 1:
        raise ValueError(f"task: {task!r}; choose {', '.join(TASKS)} or color@C with C in (0, 1]")
    return contrast


def write_task(folder: Path, task: str, n_train: int, n_test: int) -> tuple[Path, Path]:
    contrast = task_contrast(task)
    train, test = folder / f"{task}-train", folder / f"{task}-test"
    if not (train / "data.jsonl").exists():
        synth.write_dataset(train, codeword_samples(n_train, TRAIN_SEED, contrast))
    if not (test / "data.jsonl").exists():
        synth.write_dataset(test, codeword_samples(n_test, TEST_SEED, contrast))
    return train, test


def config_overrides(items: list[str]) -> dict:
    """The `--set FIELD=VALUE` overrides of a benchmark: VALUE as JSON (numbers, lists, true/false,
    quoted strings) or, when it is not JSON, the bare word as a string (`--set target_choice=nearest`)."""
    overrides = {}
    for item in items:
        field, sep, value = item.partition("=")
        if not sep or not field:
            raise SystemExit(f"--set {item!r}: expected FIELD=VALUE, e.g. --set target_steps=200")
        try:
            overrides[field] = json.loads(value)
        except json.JSONDecodeError:
            overrides[field] = value
    return overrides


def protection_seed(setup: dict) -> int:
    """The protection seed of an eval_matrix run, from its setup's `--set seed=N` (0 when not set)."""
    return int(dict(item.split("=", 1) for item in setup.get("set") or []).get("seed", 0))


def output_file(out: Path, suffix: str) -> Path:
    """OUT + suffix, not OUT.with_suffix(): a run named small-color@0.2-1 has no suffix to replace."""
    return out.parent / f"{out.name}{suffix}"


def code_state() -> dict:
    """Which code and packages made a figure, stored in each run's setup: the commit, the files under
    CODE_FOLDERS that differ from it, and a hash of those folders' Python files as they were read --
    two runs with the same hash ran the same code, committed or not (a fifteenth-session control was
    made by a working tree no commit holds, and only the PSNR gave it away; docs/evaluation.md)."""
    digest = hashlib.sha256()
    for path in sorted(p for folder in CODE_FOLDERS for p in (ROOT / folder).rglob("*.py")):
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    state: dict = {"source_sha256": digest.hexdigest()[:16], "commit": None, "uncommitted": []}
    try:
        state["commit"] = _git("rev-parse", "--short=12", "HEAD").strip() or None
        changed = _git("status", "--porcelain", "--untracked-files=all", "--", *CODE_FOLDERS).splitlines()
        state["uncommitted"] = sorted(line[3:] for line in changed if line[3:].endswith(".py"))
    except (OSError, subprocess.SubprocessError):  # no git, or not a checkout: the hash still tells
        pass
    state["python"] = platform.python_version()
    for name in PACKAGES:
        try:
            state[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            state[name] = None
    return state


def zoo_state(size: str, cache_dir: Path | None = None, used: list[str] | None = None) -> dict:
    """Which zoo weights a run used: a hash over the `size` world's built checkpoints (each family and
    pretraining seed in the cache, by name and bytes) and the CPU that ran it. The zoo is rebuilt on each
    machine; a build repeats itself on one machine, but another CPU may round differently, and the
    protected copies then differ: the twentieth session's seeds 3-5 did not reproduce the eighteenth's
    cells (docs/evaluation.md), and nothing recorded could tell whether the weights were the cause.

    `used` ("family" or "family@seed", as zoo specs name them) limits the hash to the checkpoints a run
    loaded: a family built in the same cache for another run (the twenty-third session's third ensemble
    members) would otherwise change the hash of runs that never touched it."""
    from mmguard_core.config import parse_zoo_spec
    from mmguard_core.models.zoo import default_cache_dir, zoo_path

    root = Path(cache_dir) if cache_dir else default_cache_dir()
    digest, checkpoints, per_checkpoint = hashlib.sha256(), [], {}
    wanted = None if used is None else {zoo_path(family, size, seed, root) for family, seed in
                                        (parse_zoo_spec(spec.removeprefix("zoo:")) for spec in used)}
    for weights in sorted(root.glob(f"{size}-seed*/*/model.safetensors")):
        if wanted is not None and weights.parent not in wanted:
            continue
        name = weights.parent.relative_to(root).as_posix()
        checkpoints.append(name)
        own = hashlib.sha256(weights.read_bytes()).digest()
        per_checkpoint[name] = own.hex()[:12]  # which checkpoint differs when two worlds' hashes do
        digest.update(name.encode() + b"\0" + own)
    return {"weights_sha256": digest.hexdigest()[:16] if checkpoints else None, "checkpoints": checkpoints,
            "checkpoint_sha256": per_checkpoint, "cpu": cpu_model()}


def cpu_model() -> str:
    """The CPU's name, with its family/model and the vector instructions torch's kernels use: machines
    that all call themselves "AMD EPYC" round differently (the twenty-second session's zoo build, on an
    AVX2-only EPYC, did not hash to the twenty-first session's), and the name alone cannot tell them apart."""
    name, ids = "", {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = (part.strip() for part in line.partition(":"))
            if key == "model name" and not name:
                name = value
            elif key in ("cpu family", "model") and key not in ids:
                ids[key] = value
            elif not line.strip() and name:
                break
    except OSError:
        pass
    name = name or platform.processor() or platform.machine() or "unknown"
    if ids:
        name += f" (family {ids.get('cpu family', '?')} model {ids.get('model', '?')})"
    try:
        import torch

        name += f", torch {torch.backends.cpu.get_cpu_capability()}"
    except Exception:  # torch missing or too old to say: the name is still worth recording
        pass
    return name


def describe_zoo(states: list[dict | None]) -> str:
    """One line for a table's header: the zoo weights the pooled runs used (more than one hash is called
    out: cells made on different weights are not reruns of one another)."""
    known = [s for s in states if s and s.get("weights_sha256")]
    if not known:
        return "Zoo weights: not recorded (a run from before the twentieth session)."
    hashes = sorted({s["weights_sha256"] for s in known})
    cpus = ", ".join(sorted({s["cpu"] for s in known}))
    if len(hashes) == 1:
        count = len(known[0]["checkpoints"])
        return f"Zoo weights: hash {hashes[0]} over {count} checkpoint{'s' * (count != 1)}; CPU {cpus}."
    return f"**Zoo weights differ between the runs** (hashes {', '.join(hashes)}); CPU {cpus}."


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=30).stdout


def describe_code(state: dict | None) -> str:
    """One line for a table's header: commit, uncommitted files, source hash, package versions."""
    if not state:
        return "Code: not recorded (a run from before the sixteenth session)."
    commit = state.get("commit") or "no git checkout"
    dirty = state.get("uncommitted") or []
    changes = f" with uncommitted changes to {', '.join(dirty)}" if dirty else ""
    packages = ", ".join(f"{name} {state.get(name)}" for name in PACKAGES if state.get(name))
    return f"Code: commit {commit}{changes}; source hash {state['source_sha256']}; {packages}."


def write_json(path: Path, results: object) -> None:
    """A benchmark's results file (values JSON cannot hold, such as paths, written as text)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str))
