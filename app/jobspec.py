"""Turn a job request (preset and/or config fields) into a validated ProtectionConfig (torch-free)."""

from __future__ import annotations

from typing import Any

from app.core.config import Settings
from mmguard_core.config import PRESETS, ConfigError, ProtectionConfig, preset

DEFAULT_PRESET = "balanced"


def build_config(
    preset_name: str | None, fields: dict[str, Any] | None, settings: Settings
) -> tuple[ProtectionConfig, str | None]:
    """Raise ConfigError with a readable message on anything the engine or this server refuses."""
    if preset_name is None and fields is None:
        preset_name = DEFAULT_PRESET
    if preset_name is not None and preset_name not in PRESETS:
        raise ConfigError(f"preset: {preset_name!r} is not one of {', '.join(PRESETS)}")
    fields = dict(fields or {})
    if preset_name is not None:
        if None in fields.values():
            nulls = ", ".join(k for k, v in fields.items() if v is None)
            raise ConfigError(f"config: null values are not allowed ({nulls})")
        config = preset(preset_name, **fields)
    else:
        config = ProtectionConfig.from_dict(fields)
    config.surrogates = [_allowed_model(spec, settings, "surrogates") for spec in config.surrogates]
    if config.verify_victim != "auto" and config.verify_victim.partition(":")[0] != "cnn":  # cnn[:bow]: no files
        config.verify_victim = _allowed_model(config.verify_victim, settings, "verify_victim")
    return config, preset_name


def _allowed_model(spec: str, settings: Settings, field: str) -> str:
    """`zoo:FAMILY` always; `FAMILY:PATH` only inside MMGUARD_MODELS_DIR (made absolute there)."""
    family, _, path = spec.partition(":")
    if family == "zoo":
        return spec
    if settings.models_dir is None:
        raise ConfigError(
            f"{field}: {spec!r} names a checkpoint path, but this server offers only the built-in "
            "zoo (zoo:FAMILY); its operator can allow checkpoints with MMGUARD_MODELS_DIR"
        )
    root = settings.models_dir.resolve()
    target = (root / path).resolve()
    if not target.is_relative_to(root):
        raise ConfigError(f"{field}: {spec!r} is outside this server's models folder")
    return f"{family}:{target}"


def presets() -> dict[str, dict[str, Any]]:
    return {name: preset(name).to_dict() for name in PRESETS}


def config_for_run(data: dict[str, Any], threads: int | None, device: str = "auto") -> ProtectionConfig:
    """The job's config as this worker runs it: threads and device are the worker machine's to decide
    (a job stored with `device: cpu` still uses the GPU of a GPU worker whose MMGUARD_DEVICE is auto)."""
    config = ProtectionConfig.from_dict(data)
    if threads is not None:
        config.threads = threads
    config.device = device
    return config


__all__ = ["ConfigError", "build_config", "presets", "config_for_run"]
