"""torch.compile, every way users do it: the hook-side recipe (monitor.live.compile_compat) keeps token counts
exact with no graph break and no warning, on transformers' tiny Llama (inductor on CPU for the main case).

The tests at the bottom run the real MFUMonitor; they pass once its capture hook follows the recipe."""

from __future__ import annotations

import time
import warnings
from typing import Any

import pytest
import torch
from model_configs import TINY_CONFIGS, build_model

from monitor.live.compile_compat import CompiledInputs, is_compiling, unwrap
from monitor.live.tokens import tokens_in

torch_dynamo = pytest.importorskip("torch._dynamo")
from torch._dynamo.utils import counters  # noqa: E402

SEQS = (16, 16, 24)  # a new length mid-run: a recompile with dynamic shapes
ROWS, ACCUM = 2, 2


class _Capture:
    """The capture hook's two branches, as the monitor's pre-hook must have them."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.compiled = CompiledInputs()
        self.tokens = 0
        self.first_forward: float | None = None
        module.register_forward_pre_hook(self.hook, with_kwargs=True)

    def hook(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if not torch.is_grad_enabled():
            return None
        if is_compiling():
            self.compiled.stash(args, kwargs)
            return None
        if self.first_forward is None:
            self.first_forward = time.perf_counter()
        counted = tokens_in(args, kwargs)
        self.tokens += counted[0] if counted else 0
        return None

    def step(self) -> int:
        for args, kwargs in self.compiled.drain():
            counted = tokens_in(args, kwargs)
            self.tokens += counted[0] if counted else 0
        tokens, self.tokens, self.first_forward = self.tokens, 0, None
        return tokens


def _train(mode: str, fullgraph: bool, backend: str, capture: bool) -> tuple[list[int], int, list[str]]:
    """(tokens per step, graph breaks, warnings) of a short run."""
    torch._dynamo.reset()
    counters.clear()
    model = build_model(TINY_CONFIGS["llama"])
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    cap: _Capture | None = None
    if mode == "compile_after":
        cap = _Capture(model) if capture else None
        run: Any = torch.compile(model, fullgraph=fullgraph, backend=backend)
    elif mode == "on_compiled":
        run = torch.compile(model, fullgraph=fullgraph, backend=backend)
        cap = _Capture(run) if capture else None
    else:
        cap = _Capture(model) if capture else None
        model.compile(fullgraph=fullgraph, backend=backend)
        run = model
    steps: list[int] = []
    gen = torch.Generator().manual_seed(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for s in SEQS:
            for _ in range(ACCUM):
                ids = torch.randint(3, 97, (ROWS, s), generator=gen)
                mask = torch.ones_like(ids)
                run(input_ids=ids, labels=ids, attention_mask=mask).loss.backward()
            with torch.no_grad():
                run(input_ids=ids)  # evaluation: not training throughput, not counted
            opt.step()
            opt.zero_grad()
            if cap is not None:
                steps.append(cap.step())
    messages = [str(w.message) for w in caught if "jit" not in str(w.message)]
    return steps, sum(counters["graph_break"].values()), messages


@pytest.mark.slow  # two inductor compiles of forward and backward: minutes on a busy 2-core machine
def test_compile_after_capture_fullgraph_inductor() -> None:
    baseline = _train("compile_after", True, "inductor", capture=False)
    steps, breaks, messages = _train("compile_after", True, "inductor", capture=True)
    assert steps == [ROWS * s * ACCUM for s in SEQS]
    assert breaks == baseline[1] == 0
    assert messages == baseline[2]


@pytest.mark.parametrize(
    ("mode", "fullgraph"), [("on_compiled", True), ("inplace", True), ("compile_after", False)]
)
def test_every_way_to_compile_counts_exactly(mode: str, fullgraph: bool) -> None:
    """Dynamo decides how hooks are traced whatever the backend; ``eager`` keeps these quick."""
    steps, breaks, messages = _train(mode, fullgraph, "eager", capture=True)
    assert steps == [ROWS * s * ACCUM for s in SEQS]
    assert breaks == 0
    assert not any("Dynamo" in m or "graph break" in m for m in messages)


def test_hooks_on_the_wrapper_run_eagerly() -> None:
    """A hook on the OptimizedModule runs outside the compiled frame (the clock is allowed there);
    ``unwrap`` gives the module whose config and parameter names the monitor reads."""
    torch._dynamo.reset()
    model = build_model(TINY_CONFIGS["llama"])
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    seen: list[bool] = []
    compiled.register_forward_pre_hook(lambda m, a, k: seen.append(is_compiling()), with_kwargs=True)
    ids = torch.randint(3, 97, (1, 8))
    compiled(input_ids=ids)
    assert seen == [False]
    assert unwrap(compiled) is model and unwrap(model) is model
    assert next(iter(dict(unwrap(compiled).named_parameters()))).startswith("model.")


def _monitor_tokens(mode: str, fullgraph: bool, backend: str = "eager") -> tuple[int, int]:
    """(tokens counted, tokens fed) of a short run; asserts Dynamo saw no graph break."""
    from monitor.live.monitor import MFUMonitor

    torch._dynamo.reset()
    counters.clear()
    model = build_model(TINY_CONFIGS["llama"])
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    if mode == "on_compiled":
        run: Any = torch.compile(model, fullgraph=fullgraph, backend=backend)
        mon = MFUMonitor(run, opt, handle_sigterm=False, warmup_steps=0, peak_flops=1e12)
    else:
        mon = MFUMonitor(model, opt, handle_sigterm=False, warmup_steps=0, peak_flops=1e12)
        if mode == "inplace":
            model.compile(fullgraph=fullgraph, backend=backend)
            run = model
        else:
            run = torch.compile(model, fullgraph=fullgraph, backend=backend)
    fed = 0
    try:
        for s in SEQS:
            ids = torch.randint(3, 97, (ROWS, s))
            run(input_ids=ids, labels=ids).loss.backward()
            opt.step()
            opt.zero_grad()
            fed += ids.numel()
        snap = mon.snapshot()
    finally:
        mon.close()
    assert sum(counters["graph_break"].values()) == 0
    assert mon.errors == 0
    return snap.tokens_total, fed


@pytest.mark.parametrize("mode", ["compile_after", "on_compiled", "inplace"])
def test_monitor_counts_exactly_under_fullgraph_compile(mode: str) -> None:
    counted, fed = _monitor_tokens(mode, fullgraph=True)
    assert counted == fed


def test_monitor_without_fullgraph_costs_no_graph_break() -> None:
    counted, fed = _monitor_tokens("compile_after", fullgraph=False)
    assert counted == fed


@pytest.mark.slow  # inductor compiles forward and backward: minutes on a busy 2-core machine
@pytest.mark.e2e
def test_monitor_under_fullgraph_inductor() -> None:
    counted, fed = _monitor_tokens("compile_after", fullgraph=True, backend="inductor")
    assert counted == fed
