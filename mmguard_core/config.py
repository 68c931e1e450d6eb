"""ProtectionConfig: every knob of one protection run, validated up front, JSON round-trip.

No torch import here: the web service stores and validates configs without loading torch.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from fractions import Fraction
from typing import Any

METHODS = ("mmguard", "random", "em_image", "classwise")
NOISE_STRUCTURES = ("auto", "sample", "answer", "cluster")
TRIGGER_PLACEMENTS = ("instruction", "caption_prefix", "off")
TRIGGER_POSITIONS = ("prefix", "suffix", "both", "split", "twice")
TRIGGER_VOCABULARIES = ("distinct", "shared", "mixed")
TRIGGER_ORDERS = ("rare_first", "code_first")
CODE_DESIGNS = ("random", "pairs")
TRANSFORMS = ("resize", "crop", "blur", "noise", "jpeg")
INNER_RECIPES = ("full", "lora")
SAMPLE_OBJECTIVES = ("minimize", "targeted")
TARGET_CHOICES = ("next", "nearest")
TARGET_LOSSES = ("ce", "logit")
ENSEMBLE_GRADIENTS = ("sum", "balanced")
DEVICES = ("cpu", "cuda", "auto")
DTYPES = ("float32", "bfloat16", "float16")
ZOO_SIZES = ("test", "small", "small-fillers")
# the image classifiers' architectures (engine/image_classifier.ARCHITECTURES builds them)
CLASSIFIER_ARCHITECTURES = ("cnn", "vit", "mlp")


class ConfigError(ValueError):
    """A configuration value is out of range or unknown; the message names the field."""


# every field a complete ProtectionConfig had in the eleventh session, the last before the robust
# clean-task copies: a stored config that holds all of them and no robust_epsilon is a job row or
# report from then; it made plain clean-task copies, and from_dict keeps it that way. A fixed list, so
# a field added later never needs adding anywhere for this to hold
ELEVENTH_SESSION_FIELDS = frozenset({
    "method", "epsilon", "noise_structure", "num_clusters", "noise_scale", "sample_share", "shared_steps",
    "sample_steps", "step_size", "eot_transforms", "trigger_length", "trigger_placement", "trigger_position",
    "trigger_candidates", "trigger_vocabulary", "trigger_order", "trigger_trials", "trigger_trial_steps",
    "bph_weight", "bph_betas", "crs_weight", "binding_layers", "omega_patch_fraction", "binding_steps",
    "bilevel_rounds", "inner_steps", "inner_lr", "inner_recipe", "stop_loss", "weight_noise", "sample_objective",
    "target_steps", "surrogates", "zoo_size", "batch_size", "seed", "device", "dtype", "threads", "verify",
    "verify_victim", "verify_samples", "verify_epochs", "verify_seeds",
})


def parse_epsilon(value: str | float | int, name: str = "epsilon") -> float:
    """Accept 0.0314, "0.0314", "8/255" or 8 (read as 8/255 when > 1); `name` is the field an error names."""
    try:
        if isinstance(value, str):
            text = value.strip()
            try:
                number = float(Fraction(text)) if "/" in text else float(text)
            except (ValueError, ZeroDivisionError) as exc:
                raise ConfigError(f"{name}: cannot read {value!r}; use e.g. 8/255 or 0.031") from exc
        elif isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        else:
            raise ConfigError(f"{name}: {value!r} is not a number; use e.g. 8/255 or 0.031")
    except OverflowError as exc:  # an integer (or fraction) beyond any float
        raise ConfigError(f"{name}: far too large a number; use e.g. 8/255 or 0.031") from exc
    if number > 1:
        number = number / 255.0
    return number


# the model families the engine has adapters for: models/registry.FAMILIES, which needs torch (a test
# keeps the two equal); named here so a config naming another is refused where it is written (the API
# process), not in a worker after the job was queued
FAMILY_NAMES = ("gemma3", "idefics3", "internvl", "llava", "llava_next", "paligemma", "qwen2_5_vl", "qwen2_vl")


def check_model_spec(field_name: str, spec: Any) -> None:
    """ConfigError (naming `field_name`) unless `spec` reads zoo:FAMILY[@SEED] or FAMILY:PATH with a
    family the engine knows; torch-free, so the API and the CLI refuse a typo before any work."""
    if not isinstance(spec, str) or ":" not in spec or not spec.split(":", 1)[1]:
        raise ConfigError(f"{field_name}: {spec!r} must read FAMILY:PATH (a local checkpoint folder) or zoo:FAMILY[@SEED]")
    prefix, _, rest = spec.partition(":")
    family = prefix
    if prefix == "zoo":
        try:
            family, _ = parse_zoo_spec(rest)
        except ValueError as exc:
            raise ConfigError(f"{field_name}: {exc}") from None
    if family not in FAMILY_NAMES:
        kind = "zoo family" if prefix == "zoo" else "family"
        raise ConfigError(f"{field_name}: unknown {kind} {family!r}; known: {', '.join(FAMILY_NAMES)}")


def parse_zoo_spec(rest: str) -> tuple[str, int]:
    """The (family, pretraining seed) of a ``zoo:`` spec's part after the colon: ``llava`` is seed 0,
    ``llava@1`` the same family pretrained with seed 1 (another checkpoint of the family: a gray-box
    victim, or a second surrogate of that family). ValueError names the spec when the seed is not a
    whole number >= 0."""
    family, sep, seed = rest.partition("@")
    if not sep:
        return family, 0
    if not seed.isdigit():
        raise ValueError(f"zoo:{rest}: the part after @ must be a pretraining seed (a whole number >= 0)")
    return family, int(seed)


def _three_weights(value: Any) -> tuple[float, float, float]:
    """bph_betas as three finite non-negative floats, or a ConfigError saying what was wrong."""
    message = f"bph_betas: {value!r}; use three non-negative numbers (trigger->delta, answer->trigger, answer->delta)"
    if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
        raise ConfigError(message)
    items = list(value)
    if len(items) != 3 or any(not isinstance(b, int | float) or isinstance(b, bool) for b in items):
        raise ConfigError(message)
    try:
        weights = tuple(float(b) for b in items)
    except OverflowError as exc:  # an integer beyond any float
        raise ConfigError(message) from exc
    if any(not math.isfinite(b) or b < 0 for b in weights):
        raise ConfigError(message)
    return weights  # type: ignore[return-value]


@dataclass
class ProtectionConfig:
    """One protection run. See docs/method.md for why each default is what it is."""

    method: str = "mmguard"
    # image perturbation
    epsilon: float = 8 / 255  # L-inf bound in [0, 1] pixel units, holds on the saved 8-bit PNG
    noise_structure: str = "auto"  # auto: "answer" when answers repeat (closed set), else "cluster"
    num_clusters: int = 8  # groups for "cluster" structure (captions / open-ended answers)
    noise_scale: int = 4  # shared noise lives on a grid this many times coarser than the image (smooth)
    sample_share: float = 0.25  # share of epsilon left to the per-sample noise on top of the shared pattern (all of it without one)
    # the per-sample noise lives on a grid this many times coarser than each image (1: every pixel free);
    # a coarser grid makes low-frequency noise, the kind that transfers between models and survives
    # JPEG and blur (Sharma et al. 2019, "On the effectiveness of low frequency perturbations")
    sample_noise_scale: int = 1
    # with a coarser grid, the share of the per-sample bound given to a second, pixel-level part on top
    # of the smooth one (0: smooth only): `strong`'s smooth noise reached most held-out families, the
    # pixel-level noise of sessions 12-13 held the held-out Idefics3 better (README "Options that trade
    # elsewhere"); measured at 0.5 on `strong` it protected less in the naive world, Idefics3 included
    # (docs/evaluation.md, twenty-fifth session), so every preset leaves it at 0
    sample_fine_share: float = 0.0
    # PGD steps of the shared (per-answer / per-cluster) error-minimising pattern; 0 by default since
    # the tenth session: the whole budget goes to the targeted per-sample noise, which protected
    # held-out families better (method.md); `fast` and {"sample_objective": "minimize",
    # "shared_steps": 30} run the pattern
    shared_steps: int = 0
    sample_steps: int = 5  # PGD steps of the per-sample refinement stage
    step_size: float = 0.25  # PGD step as a fraction of epsilon
    eot_transforms: list[str] = field(default_factory=lambda: ["resize", "crop", "blur", "noise"])
    # text trigger
    trigger_length: int = 3  # words; 0 turns the trigger off (3 beat 2 in the probe: docs/method.md)
    trigger_placement: str = "instruction"  # caption data: instruction | caption_prefix | off
    # where the trigger goes in the question. "twice" (default since the fourth session): a whole trigger
    # of other words on each side, so no word repeats and an attacker who drops repeated words removes
    # nothing (held-out PaliGemma after that attacker 0.35 -> 1.00 naive zoo, 0.27 -> 0.51 filler zoo,
    # same protection without it on average; docs/method.md). "both": the same words on each side
    # (beat "prefix" on the held-out victim, 0.97 vs 0.20, second session)
    trigger_position: str = "twice"
    trigger_candidates: int = 64  # candidate words scored per trigger slot
    # shared: every trigger is a distinct combination of a few everyday words, each in >= 25 % of the
    # questions, so neither a rare-word nor a vocabulary stripper removes it; distinct: no word in two
    # triggers; mixed (default since the third session): `trigger_length` distinct rare words, then a
    # shared code of `trigger_length` everyday words (with position "split": the rare words before the
    # question, the everyday ones after it). docs/method.md: mixed protected held-out and gray-box
    # victims best in both zoo worlds; rare words alone are stripped, everyday words alone are ignored
    # by a model that learned them as fillers
    trigger_vocabulary: str = "mixed"
    # mixed vocabulary: which part comes first on each side. "code_first" puts the rare words last, i.e.
    # right before the answer after the question (sixth session's probe, docs/method.md)
    trigger_order: str = "rare_first"
    # how the everyday codes are drawn: "random" (subsets of the pool at random) or "pairs" (each code word
    # in exactly two groups' codes, the pairs spread evenly: every word says "one of these two", any two
    # of a group's words name it -- informative single words that a frequency stripper keeps)
    code_design: str = "random"
    # > 1: that many whole trigger assignments (the searched one and seeded alternatives) are raced in a
    # simulated attack -- a copy of each surrogate fine-tuned on the protected data with that assignment
    # -- and the one after which the copies do worst on CLEAN samples is kept (bi-level for the words)
    trigger_trials: int = 1
    trigger_trial_steps: int = 30  # fine-tuning steps of each simulated attack in the race
    # cross-modal binding disruption (weights 0 = off). With them on, the per-sample stage optimises the
    # triggered sample; measured over 12 runs per zoo world: white-box +0.13 / +0.04, held-out Idefics3
    # -0.08 / +0.05, 1.5x the time (docs/method.md, sixth session), so they stay off by default
    bph_weight: float = 0.0
    bph_betas: tuple[float, float, float] = (1.0, 1.0, 1.0)  # trigger->delta, answer->trigger, answer->delta
    crs_weight: float = 0.0
    binding_layers: str = "middle"  # "middle" | "all" | "last" | comma list of LM layer indices
    omega_patch_fraction: float = 0.25  # share of image tokens in Omega_delta (least clean-attended)
    # with the binding losses on: PGD steps on the shared patterns AFTER the trigger search, with the
    # trigger in place, against the simulated attackers (the paper's joint l_prot over noise and trigger)
    binding_steps: int = 0
    # bi-level (simulated attacker)
    bilevel_rounds: int = 2  # surrogate fine-tuning rounds interleaved with the shared noise stage
    inner_steps: int = 10
    inner_lr: float = 1e-3
    inner_recipe: str = "full"
    stop_loss: float = 0.02  # stop the shared stage early once the ensemble loss is this low
    # model augmentation: relative std of multiplicative Gaussian noise on the surrogates' linear
    # weights, drawn afresh at each shared-noise PGD step (engine/weight_noise.py); 0 = off
    weight_noise: float = 0.0
    # the same for each per-sample PGD step, on the models that stage sees (the clean-task copies and
    # image classifiers of the targeted noise): a draw per step, from a stream of its own
    sample_weight_noise: float = 0.0
    # what the per-sample part of the noise does: "minimize" the surrogates' loss of the sample's own
    # answer (error-minimising, as the shared pattern), or "targeted": make the image read as another
    # group's answer to surrogate copies fine-tuned on the shard's clean data (an adversarial poison,
    # Fowl et al. 2021), so a victim learns a true feature the labels contradict (method.md, tenth session)
    sample_objective: str = "targeted"
    target_steps: int = 80  # fine-tuning steps of those clean-task surrogate copies ("targeted" only)
    # which other group each group's images are pushed towards ("targeted" only): "next" (g -> g + 1 in
    # the grouping's order, whatever the groups look like) or "nearest" (the group whose images look
    # most like it on average, as a derangement: the bounded noise has the least way to go)
    target_choice: str = "next"
    # what the targeted noise maximises on each surrogate ("targeted" only): "ce" the target answer's
    # probability (cross-entropy, which saturates once the surrogate copies are fooled), or "logit" its
    # raw logit, which keeps pushing the image deeper into the target group's features after that --
    # targeted adversarial examples made so transfer further (Zhao et al. 2021, "On Success and
    # Simplicity: A Second Look at Transferable Targeted Attacks")
    target_loss: str = "ce"
    # weight of a feature-level term beside that answer loss ("targeted" only; 0 = off): each LVLM copy's
    # image states entering its middle language-model layer are pushed from the sample's own answer's
    # clean mean towards the target answer's (engine/feature_target.py) -- targeted examples that move a
    # model's intermediate representation transfer to other models further than ones aimed at its
    # output (Inkawhich et al. 2019)
    target_feature_weight: float = 0.0
    # how the per-sample PGD step weighs the surrogates: "sum" the gradient of the weighted mean loss
    # (a model with large gradients -- a sharp classifier, a copy far from the target -- decides the
    # step's sign nearly alone), or "balanced": each model's gradient, per image, scaled to unit mean
    # magnitude before the weighted sum, so every surrogate votes with its own weight (the ensemble
    # attacks' gradient normalisation); same passes, one backward per model
    ensemble_gradient: str = "sum"
    # momentum of the per-sample PGD (MI-FGSM decay; 0 = plain signed steps): steps follow the running,
    # normalised gradient over the EOT draws, which made adversarial examples transfer across models
    momentum: float = 0.0
    # L-inf radius of adversarial training for the clean-task copies (0 = plain fine-tuning): a slightly
    # robust surrogate reads the image by features other models share, and adversarial examples made
    # on such models transfer further (Springer et al. 2021, "a little robustness goes a long way");
    # 2/255 since the twelfth session (method.md: the noise alone protects held-out families +0.16)
    robust_epsilon: float = 2 / 255
    # next to each robust copy, also a plainly fine-tuned one the noise must fool too (robust_epsilon > 0):
    # the plain copy stands for a victim fine-tuned the usual way, the robust one for the families it has
    # not seen
    plain_copies: bool = False
    # next to those, a LoRA copy of each surrogate: LoRA on the language model only, the vision tower
    # and projector as pretrained -- the copy stands for an attacker who LoRA-tunes the model, who
    # reads the image through the pretrained vision features (the copies above fine-tune the vision
    # tower); plain (no adversarial radius), at 3x inner_lr as the evaluation's LoRA victims train
    lora_copies: bool = False
    # training steps of an image-only classifier made from scratch on the shard's clean samples, a
    # surrogate of another kind beside the LVLM copies (engine/image_classifier.py; 0 = none): noise
    # made on fine-tuned transformers alone reaches models trained from scratch less ("targeted" only)
    classifier_steps: int = 0
    # each image classifier's weight in the loss the noise minimises, against 1 for each LVLM copy
    classifier_weight: float = 1.0
    # which classifiers: "cnn" (strided convolutions), "vit" (a small patch transformer), "mlp" (a
    # perceptron on the 6 x 6 colour layout); each one named is trained at every radius the LVLM copies
    # use, at classifier_weight each
    classifier_architectures: list[str] = field(default_factory=lambda: ["cnn"])
    # surrogates and execution
    # "family:/path" or "zoo:family[@seed]" (zoo:llava@2: the llava zoo model pretrained with seed 2, a
    # second checkpoint of the family); empty = the default zoo ensemble
    surrogates: list[str] = field(default_factory=list)
    zoo_size: str = "small"  # size of the offline tiny zoo used for "zoo:" surrogates ("test" in CI)
    batch_size: int = 16
    seed: int = 0
    device: str = "auto"  # cpu, cuda, or auto: the GPU when torch sees one (a speed-up, never required)
    dtype: str = "float32"
    threads: int = 1
    # per-job verification: a budgeted simulated attack on a model outside the ensemble (verify.py)
    verify: bool = True  # the `fast` preset turns it off
    verify_victim: str = "auto"  # auto: a zoo family left out of the ensemble (verify.VERIFY_ORDER), else the CNN
    verify_samples: int = 400  # most samples the simulated attacker fine-tunes on
    verify_epochs: float = 3.0
    # victim fine-tuning seeds the check averages over: one victim's own training seed moves the figure
    # by about +-0.2 on our benchmark (docs/method.md, ninth session); each seed is one more set of
    # the check's fine-tunes
    verify_seeds: int = 1

    def __post_init__(self) -> None:
        self.epsilon = parse_epsilon(self.epsilon)
        self.robust_epsilon = parse_epsilon(self.robust_epsilon, "robust_epsilon")
        self.eot_transforms = list(self.eot_transforms)
        self.surrogates = list(self.surrogates)
        if isinstance(self.classifier_architectures, list | tuple):
            self.classifier_architectures = list(self.classifier_architectures)
        self.bph_betas = _three_weights(self.bph_betas)  # type: ignore[assignment]
        self.validate()

    @property
    def uses_binding(self) -> bool:
        """Whether the binding losses (BPH, CRS) are on."""
        return self.bph_weight > 0 or self.crs_weight > 0

    # -- validation ------------------------------------------------------------
    def validate(self) -> None:
        def choice(name: str, allowed: tuple[str, ...]) -> None:
            value = getattr(self, name)
            if value not in allowed:
                raise ConfigError(f"{name}: {value!r} is not one of {', '.join(allowed)}")

        def in_range(name: str, low: float, high: float) -> None:
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or not low <= value <= high:
                raise ConfigError(f"{name}: {value!r} is out of range [{low}, {high}]")

        choice("method", METHODS)
        choice("noise_structure", NOISE_STRUCTURES)
        choice("trigger_placement", TRIGGER_PLACEMENTS)
        choice("trigger_position", TRIGGER_POSITIONS)
        choice("trigger_vocabulary", TRIGGER_VOCABULARIES)
        choice("trigger_order", TRIGGER_ORDERS)
        choice("code_design", CODE_DESIGNS)
        choice("inner_recipe", INNER_RECIPES)
        choice("sample_objective", SAMPLE_OBJECTIVES)
        choice("target_choice", TARGET_CHOICES)
        choice("target_loss", TARGET_LOSSES)
        choice("ensemble_gradient", ENSEMBLE_GRADIENTS)
        choice("device", DEVICES)
        choice("dtype", DTYPES)
        choice("zoo_size", ZOO_SIZES)
        if not 0 < self.epsilon <= 32 / 255:
            raise ConfigError(
                f"epsilon: {self.epsilon:.4f} ({self.epsilon * 255:.1f}/255) is out of range (0, 32/255]; "
                "above 32/255 the perturbation is plainly visible"
            )
        for name in ("shared_steps", "sample_steps", "bilevel_rounds", "inner_steps", "binding_steps", "target_steps",
                     "classifier_steps"):
            in_range(name, 0, 10_000)
        in_range("num_clusters", 1, 10_000)
        in_range("noise_scale", 1, 64)
        in_range("sample_noise_scale", 1, 64)
        in_range("sample_share", 0.0, 1.0)
        in_range("sample_fine_share", 0.0, 0.95)
        if self.sample_fine_share > 0 and self.sample_noise_scale == 1:
            raise ConfigError(f"sample_fine_share: {self.sample_fine_share} splits the per-sample noise into a smooth and "
                              "a pixel-level part, and sample_noise_scale is 1 (all pixel-level already); "
                              "set sample_noise_scale > 1 or sample_fine_share to 0")
        in_range("step_size", 1e-4, 1.0)
        in_range("trigger_length", 0, 8)
        in_range("trigger_candidates", 1, 100_000)
        in_range("trigger_trials", 1, 64)
        in_range("trigger_trial_steps", 1, 10_000)
        in_range("bph_weight", 0.0, 100.0)
        in_range("crs_weight", 0.0, 100.0)
        in_range("omega_patch_fraction", 0.01, 1.0)
        in_range("inner_lr", 0.0, 1.0)
        in_range("stop_loss", 0.0, 100.0)
        in_range("weight_noise", 0.0, 1.0)
        in_range("sample_weight_noise", 0.0, 1.0)
        in_range("target_feature_weight", 0.0, 100.0)
        in_range("momentum", 0.0, 1.0)
        in_range("classifier_weight", 0.01, 100.0)
        architectures = self.classifier_architectures
        if (not isinstance(architectures, list) or not architectures
                or any(a not in CLASSIFIER_ARCHITECTURES for a in architectures) or len(set(architectures)) < len(architectures)):
            raise ConfigError(f"classifier_architectures: {architectures!r} must be a non-empty list of distinct names "
                              f"from {', '.join(CLASSIFIER_ARCHITECTURES)}")
        if not 0 <= self.robust_epsilon <= 32 / 255:  # a float: __post_init__ parsed it (parse_epsilon)
            raise ConfigError(f"robust_epsilon: {self.robust_epsilon!r} is out of range [0, 32/255]; "
                              "2/255 (the default) is what transferred best, 0 turns it off")
        if self.method == "mmguard" and self.weight_noise > 0 and self.shared_steps == 0:
            raise ConfigError(
                "weight_noise: it jitters the surrogates during the group pattern's steps, and shared_steps is 0; "
                'add "shared_steps": 30 (the error-minimising group pattern) to use it'
            )
        if self.method == "mmguard" and self.uses_binding and self.sample_objective == "targeted":
            raise ConfigError(
                "bph_weight / crs_weight: the binding losses shape error-minimising noise with the trigger in "
                'place; add "sample_objective": "minimize" (and "shared_steps": 30 for the group pattern) to use them'
            )
        if self.method == "mmguard" and self.target_choice != "next" and self.sample_objective != "targeted":
            raise ConfigError(
                f"target_choice: {self.target_choice!r} picks where the targeted noise aims, and sample_objective "
                f'is {self.sample_objective!r}; use "sample_objective": "targeted" or leave target_choice at "next"'
            )
        if self.method == "mmguard" and self.target_loss != "ce" and self.sample_objective != "targeted":
            raise ConfigError(
                f"target_loss: {self.target_loss!r} is what the targeted noise maximises, and sample_objective "
                f'is {self.sample_objective!r}; use "sample_objective": "targeted" or leave target_loss at "ce"'
            )
        if self.method == "mmguard" and self.target_feature_weight > 0 and self.sample_objective != "targeted":
            raise ConfigError(
                "target_feature_weight: the feature term aims the targeted noise, and sample_objective "
                f'is {self.sample_objective!r}; use "sample_objective": "targeted" or leave target_feature_weight at 0'
            )
        if self.method == "mmguard" and self.classifier_steps > 0 and self.sample_objective != "targeted":
            raise ConfigError(
                "classifier_steps: the image classifier is a surrogate of the targeted noise, and sample_objective "
                f'is {self.sample_objective!r}; use "sample_objective": "targeted" or leave classifier_steps at 0'
            )
        in_range("batch_size", 1, 4096)
        in_range("seed", 0, 2**32 - 1)
        in_range("threads", 1, 256)
        for name in ("shared_steps", "sample_steps", "bilevel_rounds", "inner_steps", "binding_steps", "target_steps",
                     "classifier_steps", "num_clusters", "noise_scale", "sample_noise_scale", "trigger_length", "trigger_candidates",
                     "trigger_trials", "trigger_trial_steps", "batch_size", "seed", "threads", "verify_samples",
                     "verify_seeds"):
            if not isinstance(getattr(self, name), int) or isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}: {getattr(self, name)!r} must be a whole number")
        unknown = [t for t in self.eot_transforms if t not in TRANSFORMS]
        if unknown:
            raise ConfigError(f"eot_transforms: unknown {', '.join(map(repr, unknown))}; known: {', '.join(TRANSFORMS)}")
        if not isinstance(self.binding_layers, str):
            raise ConfigError(f"binding_layers: {self.binding_layers!r}; use middle, all, last or e.g. '0,1'")
        if self.binding_layers not in ("middle", "all", "last"):
            try:
                layers = [int(x) for x in self.binding_layers.split(",")]
            except ValueError as exc:
                raise ConfigError(
                    f"binding_layers: {self.binding_layers!r}; use middle, all, last or e.g. '0,1'"
                ) from exc
            if any(layer < 0 for layer in layers):
                raise ConfigError("binding_layers: layer indices must be >= 0")
        for name in ("verify", "plain_copies", "lora_copies"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}: {getattr(self, name)!r} must be true or false")
        in_range("verify_samples", 24, 100_000)
        in_range("verify_epochs", 0.1, 100.0)
        in_range("verify_seeds", 1, 10)
        victim = self.verify_victim
        if not isinstance(victim, str) or not (
            victim in ("auto", "cnn") or (":" in victim and victim.split(":", 1)[1])
        ):
            raise ConfigError(
                f"verify_victim: {victim!r}; use auto, cnn, zoo:FAMILY or FAMILY:PATH (a local checkpoint folder)"
            )
        if victim != "auto" and victim.partition(":")[0] != "cnn":
            check_model_spec("verify_victim", victim)
        for spec in self.surrogates:
            check_model_spec("surrogates", spec)

    # -- JSON round trip ---------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["bph_betas"] = list(self.bph_betas)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProtectionConfig:
        if not isinstance(data, dict):
            raise ConfigError("config: expected a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"config: unknown field(s) {', '.join(unknown)}")
        if "shared_steps" in data and "sample_objective" not in data:
            # every config written before the tenth session (stored jobs, reports, --config files) ran
            # the error-minimising noise; and a config that sets the group pattern's steps asks for it
            data = {**data, "sample_objective": "minimize"}
        if "robust_epsilon" not in data and ELEVENTH_SESSION_FIELDS <= set(data):
            # a complete config without it -- a stored job or report written before the twelfth session
            # -- fine-tuned its clean-task copies plainly; a job resumed after an upgrade keeps doing so
            data = {**data, "robust_epsilon": 0.0}
        try:
            return cls(**data)
        except ConfigError:
            raise
        except (TypeError, ValueError, AttributeError, OverflowError) as exc:  # a field of the wrong kind the checks missed
            raise ConfigError(f"config: {exc}") from exc

    @classmethod
    def from_json(cls, text: str) -> ProtectionConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config: not valid JSON ({exc})") from exc
        except ValueError as exc:  # an integer literal of more than 4300 digits
            raise ConfigError("config: not valid JSON (a number with more than 4300 digits)") from exc
        return cls.from_dict(data)

    def updated(self, **changes: Any) -> ProtectionConfig:
        """A validated copy with some fields changed (None values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


# The intensity knob. Each preset trades time for strength; see README "Presets".
PRESETS: dict[str, dict[str, Any]] = {
    # minutes on a CPU: the error-minimising group pattern with one short surrogate round (no
    # clean-task fine-tuning of the surrogates, which the targeted noise needs), no verification
    "fast": {"sample_objective": "minimize", "shared_steps": 12, "sample_steps": 2, "bilevel_rounds": 1,
             "inner_steps": 5, "trigger_candidates": 32, "verify": False},
    # the default: targeted per-sample noise against clean-task copies of the ensemble, the trigger,
    # the verification
    "balanced": {},
    # longer optimisation, more transformations (JPEG), a wider trigger search and the longest trigger
    # (32 inserted words, not 12: protection of held-out families grew with trigger length, method.md;
    # 8 words a side rather than 5 since the twenty-sixth session, with the patch transformer below);
    # smooth per-sample noise (a 4x coarser grid) against a plain copy of each surrogate beside each
    # robust one (fourteenth session: over six protection seeds fewer cells under target and cleaner
    # images, for 1.6x the time; method.md), and image classifiers trained from scratch beside them at
    # half an LVLM copy's weight (eighteenth session: the held-out Idefics3 after the word strippers
    # and the CNN from under their targets to over them; method.md) — a CNN and a small patch
    # transformer since the twenty-sixth session (with the 8-word trigger: naive world 3 -> 2 rows
    # under target over six seeds, Idefics3 0.86 -> 0.94; docs/evaluation.md); the bi-level settings count only
    # when a config turns the group pattern back on (shared_steps)
    "strong": {"sample_steps": 10, "bilevel_rounds": 4, "inner_steps": 20, "trigger_candidates": 128,
               "eot_transforms": ["resize", "crop", "blur", "noise", "jpeg"], "trigger_length": 8,
               "sample_noise_scale": 4, "plain_copies": True, "classifier_steps": 300, "classifier_weight": 0.5,
               "classifier_architectures": ["cnn", "vit"]},
}


def preset(name: str, **overrides: Any) -> ProtectionConfig:
    if name not in PRESETS:
        raise ConfigError(f"preset: {name!r} is not one of {', '.join(PRESETS)}")
    values = dict(PRESETS[name])
    given = {k: v for k, v in overrides.items() if v is not None}
    values.update(given)
    asks_minimize = given.get("sample_objective", "minimize" if "shared_steps" in given else "targeted") != "targeted"
    if asks_minimize and "classifier_steps" not in given:
        # the preset's image classifiers serve the targeted noise only; a preset turned back to the
        # error-minimising noise (README: {"sample_objective": "minimize", "shared_steps": 60}) drops them
        values["classifier_steps"] = 0
    return ProtectionConfig.from_dict(values)
