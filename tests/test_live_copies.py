"""Copies of a monitored model (an EMA or teacher made with copy.deepcopy, a pickled model) work and do not
count into the run: their hooks are bound to an inert monitor."""

from __future__ import annotations

import copy
import io
import pickle

import torch
from torch import nn

from monitor.live.monitor import MFUMonitor

torch.set_num_threads(1)


class TinyLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.head = nn.Linear(8, 20)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.emb(input_ids))


def _step(model: nn.Module, opt: torch.optim.Optimizer, ids: torch.Tensor) -> None:
    model(input_ids=ids).float().pow(2).mean().backward()
    opt.step()
    opt.zero_grad()


def test_a_deep_copy_of_the_model_and_optimizer_trains_and_is_not_counted() -> None:
    model = TinyLM()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = MFUMonitor(model, opt, flops_per_token=1.0, peak_flops=1e12, handle_sigterm=False, warmup_steps=0)
    try:
        ids = torch.randint(0, 20, (2, 5))
        _step(model, opt, ids)
        # Both copied at once, hooks too (before the fix: TypeError, the monitor's lock cannot be copied).
        twin, twin_opt = copy.deepcopy((model, opt))
        assert twin_opt.param_groups[0]["params"][0] is next(twin.parameters())
        before = [p.detach().clone() for p in twin.parameters()]
        for _ in range(3):
            _step(twin, twin_opt, torch.randint(0, 20, (4, 7)))  # 28 tokens a step, not this run's
        assert any(not torch.equal(a, b) for a, b in zip(before, twin.parameters(), strict=True))
        _step(model, opt, ids)
        snap = mon.snapshot()
    finally:
        mon.close()
    assert snap.steps == 2
    assert snap.tokens_total == 2 * ids.numel()
    assert mon.errors == 0


def test_a_monitored_model_pickles_and_the_loaded_copy_is_not_counted() -> None:
    model = TinyLM()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = MFUMonitor(model, opt, flops_per_token=1.0, peak_flops=1e12, handle_sigterm=False, warmup_steps=0)
    try:
        buf = io.BytesIO()
        torch.save(model, buf)  # the whole module, hooks included
        buf.seek(0)
        loaded = torch.load(buf, weights_only=False)
        assert pickle.loads(pickle.dumps(model)) is not None
        loaded_opt = torch.optim.SGD(loaded.parameters(), lr=0.01)
        _step(loaded, loaded_opt, torch.randint(0, 20, (3, 4)))
        _step(model, opt, torch.randint(0, 20, (2, 6)))
        snap = mon.snapshot()
    finally:
        mon.close()
    assert (snap.steps, snap.tokens_total) == (1, 12)
