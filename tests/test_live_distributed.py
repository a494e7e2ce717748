"""A 2-process torchrun (gloo, CPU): both ranks export /metrics on base + LOCAL_RANK; run figures agree."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("dist_monitor_worker.py")


def _two_free_ports() -> int:
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            base = a.getsockname()[1]
            if base >= 65535:
                continue
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", base + 1))
                except OSError:
                    continue
                return int(base)
    raise RuntimeError("no two consecutive free ports")


@pytest.mark.slow
def test_torchrun_two_ranks_export_both_and_agree_on_run_figures(tmp_path: Path) -> None:
    base = _two_free_ports()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += [str(WORKER), str(base), str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{k}.json").read_text()) for k in (0, 1))
    assert (r0["port"], r1["port"]) == (base, base + 1)  # base port + LOCAL_RANK

    # Each rank's own figures, as both ranks scraped them over HTTP.
    assert r0["tokens_total"] == 20 * 2 * 8 and r1["tokens_total"] == 20 * 3 * 8
    for seen in (r0["scraped"], r1["scraped"]):
        assert seen["0"]["training_tokens_total"] == 320
        assert seen["1"]["training_tokens_total"] == 480
        assert seen["0"]["training_world_size"] == seen["1"]["training_world_size"] == 2

    # Run-level figures: one all-reduce at step 20, identical on both ranks and equal to the sums.
    w0, w1 = r0["world"], r1["world"]
    assert w0 == w1
    assert w0["as_of_step"] == 20 and w0["world_size"] == 2
    assert w0["tokens_total"] == 800
    assert w0["peak_flops_per_second"] == pytest.approx(1e12 + 2e12)
    assert w0["mfu"] == pytest.approx(w0["model_flops_per_second"] / 3e12)
    assert r0["scraped"]["0"]["training_world_mfu_ratio"] == r0["scraped"]["1"]["training_world_mfu_ratio"]
    assert r0["scraped"]["0"]["training_world_tokens_total"] == 800


class _OtherRank:
    """Stands in for the all-reduce: adds a second rank's values to this rank's (the collective itself is
    covered by the torchrun test above)."""

    def __init__(self, sums: dict[str, float]) -> None:
        self.sums = sums

    def exchange(self, sums: list[float], maxes: list[float]) -> tuple[list[float], list[float]]:
        from monitor.live.distributed import SUM_FIELDS

        other = [self.sums.get(k, 0.0) for k in SUM_FIELDS]
        return [a + b for a, b in zip(sums, other, strict=True)], list(maxes)


@pytest.mark.parametrize("other_in_warmup", [True, False])
def test_run_rates_wait_for_every_rank(monkeypatch: pytest.MonkeyPatch, other_in_warmup: bool) -> None:
    """A rank still in warm-up has no windowed rate: the run's tokens/s and MFU stay unknown rather than
    summing its absence as 0 (which would make the run read slow)."""
    import torch
    from torch import nn

    import monitor.live.monitor as live
    from monitor.live.distributed import RankPlace

    monkeypatch.setattr(live, "rank_place", lambda: RankPlace(0, 0, 2))
    model = nn.Linear(4, 4)
    mon = live.MFUMonitor(flops_per_token=50.0, peak_flops=1e12, seq_len=8, warmup_steps=1, log_every=1000)
    try:
        for _ in range(4):
            model(torch.randn(2, 4)).sum().backward()
            mon.step(tokens=16)
        own = mon.snapshot()
        assert own.tokens_per_second and own.model_flops_per_second
        other = {"tokens_total": 16.0, "model_flops_total": 800.0, "peak": 1e12, "known": 1.0}
        if not other_in_warmup:
            rate = own.tokens_per_second
            other |= {"tokens_per_second": rate, "model_flops_per_second": 50.0 * rate}
            other |= {"tokens_rated": 1.0, "flops_rated": 1.0}
        mon._reducer = _OtherRank(other)  # type: ignore[assignment]
        mon._exchange(own)
        world = mon.snapshot().world
        assert world is not None and world.tokens_total == own.tokens_total + 16
        assert world.peak_flops_per_second == pytest.approx(2e12)
        if other_in_warmup:
            assert world.tokens_per_second is None and world.mfu is None
        else:
            assert world.tokens_per_second == pytest.approx(2 * own.tokens_per_second)
            assert world.mfu == pytest.approx(2 * own.model_flops_per_second / 2e12)
    finally:
        mon.close()
