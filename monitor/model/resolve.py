"""One way from what a user names to a ``ModelSpec``: a preset name, a Hugging Face config (object, dict or
``config.json`` path) or a ``ModelSpec`` itself.

The monitor, the planning tools, ``mfu flops`` and the importers all come here; each names its own input
(``spec`` for the Python API, ``--model``/``--config`` for the CLI), so an error names the argument the user
actually gave.
"""

from __future__ import annotations

import os
from typing import Any

from monitor.errors import InputError
from monitor.model.hf_config import spec_from_hf_config
from monitor.model.presets import list_presets, load_preset
from monitor.model.spec import ModelSpec


def _looks_like_path(text: str) -> bool:
    return os.sep in text or text.endswith(".json") or text.startswith(".")


def resolve_spec(value: Any, *, field: str = "spec") -> ModelSpec:
    """The ModelSpec of ``value``: a ModelSpec, a preset name, a config path, dict or config object.

    ``field`` is the argument's name in errors: an unknown preset or a missing file names it and says how to
    pass each accepted form.
    """
    if isinstance(value, ModelSpec):
        return value
    if isinstance(value, str) and not os.path.exists(value):
        if _looks_like_path(value):
            raise InputError(
                field,
                f"no such file {value!r}",
                "pass the path of an existing config.json, a preset name, a config dict or a ModelSpec",
            )
        try:
            return load_preset(value)
        except InputError as exc:
            if not exc.problem.startswith("unknown preset"):
                raise
            raise InputError(
                field,
                exc.problem,
                f"use one of: {', '.join(list_presets())}; or pass a config.json path, a Hugging Face "
                "config (object or dict) or a ModelSpec",
            ) from None
    return spec_from_hf_config(value)


def resolve_named_spec(
    config: Any = None,
    preset: str | None = None,
    *,
    config_field: str = "--config",
    preset_field: str = "--model",
) -> ModelSpec:
    """The ModelSpec of exactly one of ``config`` (a path, dict or config object) and ``preset`` (a name),
    as the CLI's ``--config PATH`` / ``--model PRESET`` pair; errors name those flags."""
    both = f"{config_field}/{preset_field}"
    fix = f"pass {config_field} PATH or {preset_field} PRESET"
    if config is not None and preset is not None:
        raise InputError(both, "both given", f"pass one of {config_field} PATH or {preset_field} PRESET")
    if config is None and preset is None:
        raise InputError(both, "no model given", fix)
    if preset is not None:
        try:
            return load_preset(preset)
        except InputError as exc:
            raise InputError(preset_field, exc.problem, exc.fix) from None
    return spec_from_hf_config(config)
