"""FP8 linear layers of a model, found by their class (no import of torchao or Transformer Engine).

- torchao float8 training: ``torchao.float8.float8_linear.Float8Linear`` (what ``convert_to_float8_training``
  swaps in; its forward and both backward GEMMs run in FP8) and torchao's MX linear (``MXLinear``, MXFP8 on
  Blackwell: the FP8 tensor-core rate);
- Transformer Engine (``transformer_engine.pytorch``): ``Linear``, ``LayerNormLinear``, ``LayerNormMLP``,
  ``GroupedLinear``, and ``TransformerLayer``/``MultiheadAttention`` (their projections and MLP): they run
  in FP8 only inside ``fp8_autocast(enabled=True)`` (``te.autocast`` in newer releases); after a forward
  each such module has ``fp8 = True`` set, so :func:`fp8_state` is read at log time, not at construction.
  Attention scores stay BF16 unless ``fp8_dpa`` is set.

Each FP8 layer's FLOPs per token are those of its 2-D weight matrices: 2 × elements forward, and 4 × elements
backward when the weight trains (input and weight gradients, both FP8 GEMMs in these libraries); that is
what FlopCounterMode counts for a linear layer.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict

TORCHAO_FP8 = {"Float8Linear", "MXLinear"}
TE_MODULES = {
    "Linear",
    "LayerNormLinear",
    "LayerNormMLP",
    "GroupedLinear",
    "TransformerLayer",
    "MultiheadAttention",
}


class Fp8Layer(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    library: str  # "torchao" or "transformer_engine"
    kind: str  # class name
    weight_elements: int  # elements of its trainable 2-D weights
    frozen_elements: int = 0
    active: bool | None  # FP8 in use: True (torchao), TE's ``fp8`` flag after a forward, None before one


def _library(module: Any) -> tuple[str, str] | None:
    cls = type(module)
    mod, name = cls.__module__ or "", cls.__qualname__
    if mod.startswith("torchao.") and name in TORCHAO_FP8:
        return "torchao", name
    if mod.startswith("transformer_engine.pytorch") and name in TE_MODULES:
        return "transformer_engine", name
    return None


def find_fp8_layers(model: Any) -> list[Fp8Layer]:
    """The model's FP8 linear layers (outermost ones: a TE TransformerLayer's inner Linear is not listed
    twice)."""
    out: list[Fp8Layer] = []
    taken: list[str] = []
    for name, module in model.named_modules():
        found = _library(module)
        if found is None or any(name.startswith(t + ".") for t in taken):
            continue
        taken.append(name)
        trains = frozen = 0
        for p in module.parameters():
            if p.dim() == 2:
                if p.requires_grad:
                    trains += p.numel()
                else:
                    frozen += p.numel()
        library, kind = found
        active = True if library == "torchao" else _te_flag(module)
        out.append(
            Fp8Layer(
                name=name,
                library=library,
                kind=kind,
                weight_elements=trains,
                frozen_elements=frozen,
                active=active,
            )
        )
    return out


def _te_flag(module: Any) -> bool | None:
    flag = getattr(module, "fp8", None)
    if flag is None:
        for child in module.modules():
            flag = getattr(child, "fp8", None)
            if flag is not None:
                break
    return None if flag is None else bool(flag)


def fp8_state(model: Any, layers: Iterable[Fp8Layer]) -> list[Fp8Layer]:
    """The layers with ``active`` re-read (Transformer Engine sets ``fp8`` at each forward): log time."""
    modules = dict(model.named_modules())
    out = []
    for layer in layers:
        module = modules.get(layer.name)
        if module is not None and layer.library == "transformer_engine":
            layer = layer.model_copy(update={"active": _te_flag(module)})
        out.append(layer)
    return out


def fp8_training_flops_per_token(layers: Iterable[Fp8Layer]) -> float:
    """Training FLOPs per token of the layers running in FP8: 6 × trainable weight elements (forward 2,
    backward 4) + 4 × frozen ones (forward 2, input gradient 2; an upper bound for a frozen first layer, whose
    input needs no gradient)."""
    return float(sum(6 * x.weight_elements + 4 * x.frozen_elements for x in layers if x.active))
