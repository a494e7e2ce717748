"""The accelerator catalogue: dense peak FLOP/s per dtype, each with its source. Data: no torch, no I/O but
its own file.

Figures live in ``catalog.json`` beside this module (TFLOP/s as the datasheets print them, dense, transcribed
from the reference table and checked against it by a test). Lookups are exact: a device id, or a name after
normalisation (case, spaces, dashes, underscores) that equals a known name or alias. Never a substring: "l4"
is in "NVIDIA L40S" and "a10" in "A100", and both mistakes have shipped in other tools.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from monitor.errors import InputError
from monitor.hardware.dtypes import DTYPES, normalize_dtype

TERA = 1e12


@dataclass(frozen=True)
class Accelerator:
    """One catalogued part. ``peaks`` maps dtype to dense FLOP/s: None where the part has no such unit; a
    dtype that is not a key at all was not verified (``peak`` gives None for both, ``has_unit`` tells
    which)."""

    key: str
    name: str
    vendor: str
    peaks: dict[str, float | None]
    source: str
    compute_capability: tuple[int, int] | None = None
    pci_device_ids: dict[int, str] = field(default_factory=dict)  # 16-bit device id -> its pci.ids name
    driver_names: tuple[str, ...] = ()  # names NVML / torch.cuda report for this part, exactly
    aliases: tuple[str, ...] = ()  # friendly names for planning tools ("H100" is the SXM part)
    fp64_vector: float | None = None  # FLOP/s of the non-tensor FP64 units, for reference

    def peak(self, dtype: Any) -> float | None:
        """Dense peak FLOP/s for ``dtype`` (any spelling ``normalize_dtype`` accepts); None if there is
        none."""
        return self.peaks.get(normalize_dtype(dtype))

    def has_unit(self, dtype: Any) -> bool | None:
        """True: a verified peak; False: the part has no such unit; None: not verified."""
        name = normalize_dtype(dtype)
        if name not in self.peaks:
            return None
        return self.peaks[name] is not None


def normalize_name(name: str) -> str:
    """Case, dashes, underscores and repeated spaces do not matter; every other character does."""
    return re.sub(r"[\s_\-]+", " ", str(name)).strip().lower()


def _parse(entry: dict[str, Any]) -> Accelerator:
    peaks = {
        normalize_dtype(k): (None if v is None else float(v) * TERA) for k, v in entry["peaks_tflops"].items()
    }
    cc = entry.get("compute_capability")
    fp64_vector = entry.get("fp64_vector_tflops")
    return Accelerator(
        key=entry["key"],
        name=entry["name"],
        vendor=entry["vendor"],
        peaks=peaks,
        source=entry["source"],
        compute_capability=(int(cc[0]), int(cc[1])) if cc else None,
        pci_device_ids={int(k, 16): v for k, v in entry.get("pci_device_ids", {}).items()},
        driver_names=tuple(entry.get("driver_names", ())),
        aliases=tuple(entry.get("aliases", ())),
        fp64_vector=None if fp64_vector is None else float(fp64_vector) * TERA,
    )


@cache
def _load() -> tuple[Accelerator, ...]:
    text = resources.files("monitor.hardware").joinpath("catalog.json").read_text(encoding="utf-8")
    return tuple(_parse(entry) for entry in json.loads(text)["accelerators"])


@cache
def _indexes() -> tuple[dict[str, Accelerator], dict[str, Accelerator], dict[int, Accelerator]]:
    """(every known name -> part, driver names and canonical names only -> part, device id -> part)."""
    by_any: dict[str, Accelerator] = {}
    by_driver: dict[str, Accelerator] = {}
    by_id: dict[int, Accelerator] = {}
    for acc in _load():
        exact = [acc.key, acc.name, *acc.driver_names]
        for name in [*exact, *acc.aliases]:
            norm = normalize_name(name)
            other = by_any.setdefault(norm, acc)
            if other is not acc:
                raise ValueError(f"catalog.json: name {name!r} belongs to both {other.key} and {acc.key}")
        for name in exact:
            by_driver[normalize_name(name)] = acc
        for device_id in acc.pci_device_ids:
            if by_id.setdefault(device_id, acc) is not acc:
                raise ValueError(f"catalog.json: device id {device_id:#06x} listed twice")
    return by_any, by_driver, by_id


def all_accelerators() -> tuple[Accelerator, ...]:
    return _load()


def lookup(name: str) -> Accelerator | None:
    """The part whose key, name, driver name or alias equals ``name`` after normalisation; None otherwise.

    A leading vendor word ("NVIDIA A100", "AMD MI300X") is also tried without it; nothing else is stripped."""
    by_any = _indexes()[0]
    norm = normalize_name(name)
    found = by_any.get(norm)
    if found is None:
        for prefix in ("nvidia ", "amd "):
            if norm.startswith(prefix):
                found = by_any.get(norm[len(prefix) :])
                break
    return found


def lookup_driver_name(name: str) -> Accelerator | None:
    """Like ``lookup`` but only names a driver reports (and canonical names), never a friendly short alias: a
    detected "NVIDIA H100" of unknown form factor must not be taken for the SXM part."""
    return _indexes()[1].get(normalize_name(name))


def by_pci_device_id(device_id: int | None) -> Accelerator | None:
    """The part for a 16-bit PCI device id (0x2330) or a full NVML pciDeviceId (0x233010DE: device id in the
    upper 16 bits, NVIDIA's vendor id 0x10DE in the lower)."""
    if device_id is None:
        return None
    device_id = int(device_id)
    if device_id > 0xFFFF:
        if device_id & 0xFFFF != 0x10DE:
            return None
        device_id >>= 16
    return _indexes()[2].get(device_id)


def suggestions(name: str, limit: int = 3) -> list[str]:
    """Close known names for a name that matched nothing (difflib), to put in an error message."""
    names = sorted({n for acc in _load() for n in (acc.name, *acc.driver_names, *acc.aliases)})
    by_norm = {normalize_name(n): n for n in names}
    close = difflib.get_close_matches(normalize_name(name), list(by_norm), n=limit, cutoff=0.5)
    return [by_norm[c] for c in close]


def resolve(name: str, *, field: str = "--gpu") -> Accelerator:
    """``lookup`` for user input: an unknown name is an InputError that suggests close matches."""
    acc = lookup(name)
    if acc is not None:
        return acc
    close = suggestions(name)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    raise InputError(
        field,
        f"unknown accelerator {name!r}",
        f"{hint}see `mfu hardware` for the catalogue, or give the peak yourself (--peak-tflops)",
    )


def catalogue_peak(
    name: str, dtype: Any, *, name_field: str = "--gpu", dtype_field: str = "--dtype", fix: str | None = None
) -> tuple[float, Accelerator]:
    """(dense peak FLOP/s, the part) for a catalogue name and a dtype; the one lookup the planning tools and
    the importers share. An unknown name or a part without a verified figure for ``dtype`` is an InputError
    naming ``name_field`` or ``dtype_field``."""
    acc = resolve(name, field=name_field)
    peak = acc.peak(dtype)
    if peak is None:
        problem = "has no" if acc.has_unit(dtype) is False else "has no verified"
        raise InputError(
            dtype_field,
            f"{acc.name} {problem} {dtype} peak",
            fix or f"pass another {dtype_field} or give the peak yourself",
        )
    return peak, acc


__all__ = [
    "DTYPES",
    "Accelerator",
    "all_accelerators",
    "by_pci_device_id",
    "catalogue_peak",
    "lookup",
    "lookup_driver_name",
    "normalize_name",
    "resolve",
    "suggestions",
]
