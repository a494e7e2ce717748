"""The forward hook's side when the model runs under torch.compile: only work Dynamo can trace.

Dynamo traces a module's forward hooks into the compiled graph (``torch.compile(model)`` and
``model.compile()`` both compile ``Module.__call__``, hooks included). A hook that reads a clock
(``time.perf_counter``) or calls anything Dynamo cannot trace stops a ``fullgraph=True`` compile with
``torch._dynamo.exc.Unsupported`` and costs a graph break without it. ``torch._dynamo.disable`` on the hook
does not help: under ``fullgraph=True`` calling a disabled function is itself an error.

So the hook branches on :func:`torch.compiler.is_compiling` (constant-folded while tracing):

- compiled: :meth:`CompiledInputs.stash` appends the call's input tensors (references, no copy, no device
  work) to a list. Dynamo replays that list mutation after each run of the compiled graph, so every call is
  recorded exactly, with no graph break and nothing added to the graph;
- eager (or a hook on the ``OptimizedModule`` wrapper, which runs outside the compiled frame): the monitor's
  usual path, clock included.

At the step's end (the optimizer's post-hook or ``mon.step()``, both eager) :meth:`CompiledInputs.drain`
hands the stashed calls to the usual counting (shapes, deferred attention masks, packed documents).

What a compiled frame loses: the first forward's timestamp (input-wait time, the step's start for the
first step; the step time itself is taken between step ends), and the backward-start marker of the
straggler wait. A compiled optimizer step (the post-hook traced) gets no step end: pass ``mon.step()``.
"""

from __future__ import annotations

from typing import Any

import torch

_Tensor = torch.Tensor

# Keyword arguments whose tensors the counting reads (shapes; masks and positions read at log time).
KEYS = (
    "input_ids",
    "inputs_embeds",
    "attention_mask",
    "position_ids",
    "cu_seq_lens_q",
    "cu_seq_lens_k",
    "cu_seqlens_q",
    "cu_seqlens_k",
)


def is_compiling() -> bool:
    """True while Dynamo traces (then constant-folded); False when running eagerly."""
    return bool(torch.compiler.is_compiling())


def unwrap(module: Any) -> Any:
    """The module an ``OptimizedModule`` (``torch.compile(model)``'s result) wraps, for reading its config
    and parameter names (which otherwise carry an ``_orig_mod.`` prefix); any other module as it is."""
    inner = getattr(module, "_orig_mod", None)
    return inner if isinstance(inner, torch.nn.Module) else module


class CompiledInputs:
    """Forward calls recorded inside compiled frames, counted at the step's end."""

    __slots__ = ("calls",)

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def stash(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Traceable: keep the first tensor argument and the counted keywords (references only)."""
        first: tuple[Any, ...] = ()
        for a in args:
            if isinstance(a, _Tensor):
                first = (a,)
                break
        kept = {k: kwargs[k] for k in KEYS if k in kwargs and kwargs[k] is not None}
        self.calls.append((first, kept))

    def drain(self) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        """The calls recorded since the last drain (eager code only)."""
        calls, self.calls = self.calls, []
        return calls
