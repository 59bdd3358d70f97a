"""Family registry: maps a family name to its class, and builds typed configs from presets.

The CLI, trainer and server never branch on a family name; they ask this module. Families are
imported lazily so that listing them (or `aigc --help`) does not import torch.
"""

from __future__ import annotations

import dataclasses
import importlib
import typing
from typing import Any

from aigc.errors import InvalidInput, NotFound

# name -> "module:Class". One file per family.
FAMILIES: dict[str, str] = {
    "gpt": "aigc.models.gpt:GPT",
    "lstm": "aigc.models.lstm:LSTMLM",
    "gan": "aigc.models.gan:GAN",
    "vae": "aigc.models.vae:VAE",
    "vqvae": "aigc.models.vqvae:VQVAE",
    "diffusion": "aigc.models.diffusion:Diffusion",
    "copula": "aigc.models.copula:Copula",
    "ctgan": "aigc.models.ctgan:CTGAN",
    "tvae": "aigc.models.tvae:TVAE",
    "tabgpt": "aigc.models.tabgpt:TabGPT",
    "vocoder": "aigc.models.vocoder:Vocoder",
}


def family_names() -> list[str]:
    return sorted(FAMILIES)


def get_family(name: str) -> type:
    if name not in FAMILIES:
        raise NotFound(f"unknown family {name!r}: choose one of {', '.join(family_names())}")
    module, cls = FAMILIES[name].split(":")
    return getattr(importlib.import_module(module), cls)


def make_config(family: type, preset: str = "small", overrides: dict[str, Any] | None = None):
    """``family.Config`` from a named preset plus overrides; unknown keys and wrong types are refused."""
    presets: dict[str, dict[str, Any]] = family.PRESETS
    if preset not in presets:
        raise NotFound(f"unknown preset {preset!r} for {family.name}: choose one of {', '.join(presets)}")
    values = {**presets[preset], **(overrides or {})}
    return config_from_dict(family.Config, values, what=f"{family.name} config")


def config_from_dict(cls: type, values: dict[str, Any], what: str = "config"):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise InvalidInput(f"unknown {what} key(s) {', '.join(unknown)}: valid keys are {', '.join(sorted(names))}")
    clean = {}
    for key, value in values.items():
        clean[key] = _coerce(value, hints[key], f"{what} {key}")
    return cls(**clean)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Accept exact types, ints for floats, and strings from the command line; refuse the rest."""
    args = typing.get_args(hint)
    if value is None and type(None) in args:
        return None
    target = next((a for a in args if a is not type(None)), hint) if args else hint
    if target is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
    elif target is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lstrip("-").isdigit():
            return int(value)
    elif target is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif target is str:
        if isinstance(value, str):
            return value
    else:
        return value
    raise InvalidInput(f"{where} must be {getattr(target, '__name__', target)}, got {value!r}")
