"""Presets: published Hugging Face configs by short name (``llama-2-7b``, ``deepseek-v3``, ...).

Each preset is ``presets/<name>.json``: ``{"name", "source", "published_size", "config"}`` where ``config`` is
the model's ``config.json`` (the fields that matter; the rest take the family defaults, as in transformers).
They go through :func:`spec_from_hf_config` like any user config, and the tests build every one of them with
transformers on the meta device and compare parameter counts to the parameter.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from monitor.errors import InputError
from monitor.model.hf_config import spec_from_hf_config
from monitor.model.spec import ModelSpec

_PACKAGE = "monitor.model"


def _normalize(name: str) -> str:
    return name.strip().lower().rsplit("/", 1)[-1].replace("_", "-").removesuffix("-hf").removeprefix("meta-")


@cache
def _index() -> dict[str, str]:
    folder = resources.files(_PACKAGE).joinpath("presets")
    return {
        entry.name.removesuffix(".json"): entry.name
        for entry in folder.iterdir()
        if entry.name.endswith(".json")
    }


def list_presets() -> list[str]:
    """Short names of every shipped preset, sorted."""
    return sorted(_index())


def preset_info(name: str) -> dict[str, Any]:
    """The preset's file contents: ``name``, ``source``, ``published_size``, ``config``."""
    key = _normalize(name)
    index = _index()
    if key not in index:
        raise InputError(
            "--model",
            f"unknown preset {name!r}",
            f"use one of: {', '.join(list_presets())}, or pass --config PATH to a config.json",
        )
    text = resources.files(_PACKAGE).joinpath("presets", index[key]).read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def preset_config(name: str) -> dict[str, Any]:
    """The Hugging Face config dict of a preset (for transformers, or for other tools)."""
    return dict(preset_info(name)["config"])


def load_preset(name: str) -> ModelSpec:
    """ModelSpec of a preset by short name (case-insensitive; ``meta-llama/Llama-2-7b-hf`` works too)."""
    info = preset_info(name)
    return spec_from_hf_config(info["config"], name=info["name"])
