"""One run-log schema: a real run (a tiny model trained on CPU) writes its log, and every line of it reads
back through ``monitor.schema`` with every declared field present — the writer writes nothing the schema
does not declare, and declares nothing it does not write."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from pydantic import TypeAdapter
from torch import nn

from monitor import MFUMonitor
from monitor.schema import STEP_KEYS, AlertRecord, LogRecord, RunEnd, RunStart, StepRecord

V, D = 32, 8


class TinyLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(V, D)
        self.head = nn.Linear(D, V)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.emb(input_ids))


def test_a_real_run_log_reads_back_through_the_schema(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TinyLM()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    log = tmp_path / "run.jsonl"
    kw: dict[str, Any] = dict(
        flops_per_token=6.0 * 300, peak_flops=1e30, handle_sigterm=False, warmup_steps=2, tick_seconds=0
    )
    # A log tick at every step (tick_seconds=0); an MFU threshold no CPU reaches, held for 0 s: the alert
    # fires at the first tick after warm-up.
    with MFUMonitor(model, opt, log_path=log, run="schema", alert_below=0.5, alert_after=0.0, **kw):
        for i in range(8):
            ids = torch.randint(0, V, (2, 6))
            if i % 2:  # steps with an attention mask (real tokens) and without
                mask = torch.ones(2, 6, dtype=torch.long)
                mask[0, 4:] = 0
                out = model(input_ids=ids, attention_mask=mask)
            else:
                out = model(input_ids=ids)
            out.sum().backward()
            opt.step()
            opt.zero_grad()
    lines = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    adapter: TypeAdapter[Any] = TypeAdapter(LogRecord)
    records = [adapter.validate_python(obj) for obj in lines]
    kinds = [type(r) for r in records]
    assert kinds[0] is RunStart and kinds[-1] is RunEnd
    assert kinds.count(StepRecord) == 8 and AlertRecord in kinds
    declared = {
        "run_start": set(RunStart.model_fields),
        "step": set(StepRecord.model_fields),
        "alert": set(AlertRecord.model_fields),
        "run_end": set(RunEnd.model_fields),
    }
    for obj in lines:
        assert set(obj) == declared[obj["event"]], obj["event"]
    steps = [obj for obj in lines if obj["event"] == "step"]
    assert all(tuple(obj) == STEP_KEYS for obj in steps)
    assert [s["step"] for s in steps] == list(range(8))
    assert [s["warmup"] for s in steps] == [True, True] + [False] * 6
    assert [s["real_tokens"] for s in steps][1::2] == [10, 10, 10, 10]  # 12 tokens, 2 masked out
    assert lines[-1]["steps"] == 8 and lines[-1]["tokens"] == 8 * 12
