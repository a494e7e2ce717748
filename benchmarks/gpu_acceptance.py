"""GPU acceptance run: is the live MFU true on this GPU? One script, a readable report, one JSON verdict.

    python benchmarks/gpu_acceptance.py [--train-seconds 60] [--out docs/gpu-acceptance-DATE-DEVICE.json]

Checks, each guarded (a failing check is reported, the others still run; the JSON is always printed last):
  detection   name, PCI device id, catalogue part (form factor), dense peak per dtype and its source
  matmul      a bf16 (and, on sm_89+, an fp8 ``torch._scaled_mm``) matmul rate against the catalogue peak: < 1
  training    a ~134M-parameter transformers Llama (sdpa, bf16) trained for ``--train-seconds`` with
              MFUMonitor; its cumulative MFU against the truth measured in the same run, independently:
              FlopCounterMode FLOPs of one step x steps / CUDA-event time / peak — within 2%
  no_sync     the monitored steps under ``torch.cuda.set_sync_debug_mode("warn")``: no synchronising call
              whose stack passes through the monitor (syncs of the model or loop are listed, not failed)
  overhead    the same loop with and without the monitor, interleaved blocks: step time within 0.5%
  metrics     /metrics scraped during the run: power, energy, SM clock, memory, utilisation sane; joules/token
  gpm         tensor-core activity (NVML GPM, Hopper+) and MFU <= tensor activity (+5 points)
  gpm_run_log the same from the run log's step records, read back by ``mfu analyze``'s summary
Where there is no NVIDIA GPU it prints "no GPU" and exits 0 (the test suite runs that path).
``--smoke-cpu`` runs the training checks' code on the CPU with a tiny Llama and a stand-in peak (the test
suite runs it too): a test of the script, whose figures are not measurements.
Exit status: 0 when every check that ran passed (or there is no GPU), 1 otherwise.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
import traceback
import urllib.request
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DTYPES = ("bf16", "fp16", "fp8", "tf32", "fp32")
MFU_TOLERANCE = 0.02  # relative
OVERHEAD_TOLERANCE = 0.005  # relative
SMOKE_PEAK = 1e11  # --smoke-cpu: a stand-in peak (FLOP/s) so that the MFU code runs; not a figure of anything


@dataclass(frozen=True)
class Target:
    """Where the training checks run: the GPU (the acceptance run), or the CPU with a tiny model
    (``--smoke-cpu``: the same code end to end, so that a GPU day finds no bug in the script itself)."""

    device: str = "cuda"
    seq: int = 1024
    batch: int = 8
    vocab: int = 32000
    hidden: int = 768
    ffn: int = 2048
    layers: int = 12
    heads: int = 12

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"

    def sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def sync_debug(self, mode: str) -> None:
        """``torch.cuda.set_sync_debug_mode`` (nothing to watch on the CPU)."""
        if self.cuda:
            import torch

            torch.cuda.set_sync_debug_mode(mode)  # type: ignore[arg-type]


SMOKE = Target(device="cpu", seq=32, batch=2, vocab=256, hidden=32, ffn=64, layers=2, heads=4)


class Report:
    """Checks and their figures; printed as they come, and as one JSON object at the end."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        self.checks: list[dict[str, Any]] = []

    def check(self, name: str, ok: bool | None, detail: str, **figures: Any) -> None:
        mark = {True: "PASS", False: "FAIL", None: "INFO"}[ok]
        print(f"[{mark}] {name}: {detail}", flush=True)
        self.checks.append({"name": name, "ok": ok, "detail": detail, **figures})

    def run(self, name: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception as exc:
            self.check(name, False, f"raised {type(exc).__name__}: {exc}", traceback=traceback.format_exc())

    def verdict(self) -> dict[str, Any]:
        failed = [c["name"] for c in self.checks if c["ok"] is False]
        return {**self.data, "checks": self.checks, "failed": failed, "verdict": "fail" if failed else "pass"}


def detection(report: Report, backend: Any) -> dict[str, Any]:
    from monitor.hardware.detect import detect_accelerator

    info = backend.device_info(0)
    peaks: dict[str, dict[str, Any]] = {}
    for dtype in DTYPES:
        p = detect_accelerator(dtype, index=0, backend=backend)
        peaks[dtype] = {
            "peak_flops_per_second": p.peak_flops_per_second,
            "source": p.source,
            "detail": p.detail,
        }
    bf16 = peaks["bf16"]
    known = bf16["peak_flops_per_second"] is not None
    pci = f"0x{info.pci_device_id:04x}" if info.pci_device_id is not None else None
    accelerator = detect_accelerator("bf16", index=0, backend=backend).accelerator
    report.data["device"] = {
        "name": info.name,
        "pci_device_id": pci,
        "catalogue_part": accelerator,
        "compute_capability": info.compute_capability,
        "sm_count": info.sm_count,
        "max_sm_clock_mhz": info.max_sm_clock_mhz,
        "mig": info.mig,
    }
    report.check(
        "detection",
        known,
        f"{info.name} (PCI {pci}, part {accelerator}); bf16 peak "
        f"{_tf(bf16['peak_flops_per_second'])} TFLOP/s from {bf16['source']}",
        peaks=peaks,
    )
    return peaks


def _tf(value: float | None) -> str:
    return "unknown" if value is None else f"{value / 1e12:.1f}"


def matmul(report: Report, peaks: dict[str, Any]) -> None:
    import torch

    from monitor.hardware.calibrate import calibrate

    result = calibrate("bf16", device="cuda", size=8192, seconds=3.0, cache=False)
    peak = peaks["bf16"]["peak_flops_per_second"]
    ratio = None if peak is None else result.flops_per_second / peak
    report.check(
        "matmul_bf16",
        None if ratio is None else ratio < 1.0,
        f"best {result.flops_per_second / 1e12:.1f} TFLOP/s = {ratio:.1%} of the catalogue peak"
        if ratio is not None
        else "no peak to compare with",
        measured_flops_per_second=result.flops_per_second,
        ratio=ratio,
    )
    if torch.cuda.get_device_capability(0) < (8, 9) or not hasattr(torch, "_scaled_mm"):
        report.check("matmul_fp8", None, "no fp8 tensor cores on this part (or no torch._scaled_mm)")
        return
    n = 8192
    a = torch.randn(n, n, device="cuda").to(torch.float8_e4m3fn)
    b = torch.randn(n, n, device="cuda").to(torch.float8_e4m3fn).t()  # column-major, as _scaled_mm needs
    one = torch.ones((), device="cuda")

    def mm() -> Any:
        return torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)

    for _ in range(3):
        mm()
    seconds = _cuda_seconds(mm, 50)
    rate = 2 * n**3 * 50 / seconds
    peak8 = peaks["fp8"]["peak_flops_per_second"]
    ratio8 = None if peak8 is None else rate / peak8
    report.check(
        "matmul_fp8",
        None if ratio8 is None else ratio8 < 1.0,
        f"{rate / 1e12:.1f} TFLOP/s" + ("" if ratio8 is None else f" = {ratio8:.1%} of the fp8 peak"),
        measured_flops_per_second=rate,
        ratio=ratio8,
    )


class _Span:
    """Seconds between ``start()`` and ``stop()``: CUDA events on the GPU (recorded without a host sync),
    the host clock on the CPU."""

    def __init__(self, cuda: bool = True) -> None:
        import torch

        self.cuda = cuda
        if cuda:
            self.events = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        self.t0 = self.t1 = 0.0

    def start(self) -> None:
        if self.cuda:
            self.events[0].record()
        else:
            self.t0 = time.perf_counter()

    def stop(self) -> float:
        if self.cuda:
            self.events[1].record()
            self.events[1].synchronize()
            return float(self.events[0].elapsed_time(self.events[1])) / 1e3
        self.t1 = time.perf_counter()
        return self.t1 - self.t0


def _cuda_seconds(fn: Callable[[], Any], repeat: int, cuda: bool = True) -> float:
    span = _Span(cuda)
    span.start()
    for _ in range(repeat):
        fn()
    return span.stop()


def build_model(t: Target) -> Any:
    """A transformers Llama: ~134M parameters in bf16 on the GPU, tiny in fp32 on the CPU."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=t.vocab,
        hidden_size=t.hidden,
        intermediate_size=t.ffn,
        num_hidden_layers=t.layers,
        num_attention_heads=t.heads,
        num_key_value_heads=t.heads,
        max_position_embeddings=t.seq,
        tie_word_embeddings=False,
    )
    # sdpa on the GPU (FlopCounterMode counts its flash and efficient kernels); eager on the CPU, whose
    # fused sdpa kernel FlopCounterMode does not count
    config._attn_implementation = "sdpa" if t.cuda else "eager"
    torch.manual_seed(0)
    model: Any = LlamaForCausalLM(config)
    return model.to(device=t.device, dtype=torch.bfloat16 if t.cuda else torch.float32)


def training(report: Report, peaks: dict[str, Any], train_seconds: float, t: Target | None = None) -> None:
    import torch
    import torch.nn.functional as F
    from prometheus_client import CollectorRegistry
    from torch.utils.flop_counter import FlopCounterMode

    from monitor import MFUMonitor

    t = t or Target()
    smoke = not t.cuda  # on the CPU the figures are the script's own test, not measurements
    SEQ, BATCH, VOCAB = t.seq, t.batch, t.vocab
    peak = peaks["bf16"]["peak_flops_per_second"]
    extra: dict[str, Any] = {"peak_flops": peak} if smoke else {}  # no catalogue peak for a CPU
    model = build_model(t)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=t.cuda)
    g = torch.Generator(device=t.device).manual_seed(0)
    batches = [torch.randint(0, VOCAB, (BATCH, SEQ + 1), device=t.device, generator=g) for _ in range(8)]
    mask = torch.ones(BATCH, SEQ, dtype=torch.long, device=t.device)

    def step(i: int) -> None:
        ids = batches[i % len(batches)]
        # a mask of ones: without one, transformers looks for packed documents in the position ids in
        # training, a data-dependent check that synchronises
        logits = model(input_ids=ids[:, :-1], attention_mask=mask).logits
        loss = F.cross_entropy(logits.float().view(-1, VOCAB), ids[:, 1:].reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for i in range(5):  # warm up kernels and the allocator, unmonitored
        step(i)
    t.sync()
    with FlopCounterMode(display=False) as counter:  # the truth's FLOPs: one real step, counted
        step(0)
    flops_per_step = float(counter.get_total_flops())
    t.sync()
    t0 = time.perf_counter()
    step(1)
    t.sync()
    step_guess = time.perf_counter() - t0
    n_steps = max(20, int(train_seconds / max(step_guess, 1e-3)))
    report.data["training"] = {
        "params": params,
        "seq_len": SEQ,
        "batch": BATCH,
        "steps": n_steps,
        "flops_per_step_flopcounter": flops_per_step,
    }

    # --- monitored run: MFU vs the truth, no sync from the monitor, /metrics during the run ---
    registry = CollectorRegistry()
    warmup = 5
    log_path = Path(tempfile.mkdtemp(prefix="mfu-acceptance-")) / "run.jsonl"
    syncs: list[list[str]] = []
    scrapes: list[dict[str, float]] = []
    mon = MFUMonitor(
        model,
        opt,
        dtype="bf16",
        registry=registry,
        port=0,
        warmup_steps=warmup,
        handle_sigterm=False,
        run="gpu-acceptance",
        log_path=log_path,
        **extra,
    )
    span = _Span(t.cuda)
    old_show = warnings.showwarning

    def record_sync(message: Any, category: Any, filename: str, lineno: int, *a: Any, **k: Any) -> None:
        if "synchroniz" in str(message).lower():
            syncs.append([f"{f.filename}:{f.lineno}" for f in traceback.extract_stack()])
        else:
            old_show(message, category, filename, lineno, *a, **k)

    with mon:
        for i in range(warmup):
            step(i)
        span.start()
        warnings.showwarning = record_sync
        t.sync_debug("warn")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("always")
                warnings.showwarning = record_sync
                for i in range(n_steps):
                    step(i)
                    if i in (n_steps // 3, 2 * n_steps // 3) and mon.port:
                        t.sync_debug("default")  # the scrape is not the training loop
                        scrapes.append(_scrape(mon.port))
                        t.sync_debug("warn")
        finally:
            t.sync_debug("default")
            warnings.showwarning = old_show
        elapsed = span.stop()
        snap = mon.snapshot()
    truth = flops_per_step * n_steps / elapsed / peak if peak else None
    monitor_mfu = snap.mfu_cumulative
    monitor_flops_per_step = snap.model_flops_total / max(snap.resolved_steps, 1)
    ok = None
    if truth and monitor_mfu is not None and not smoke:
        ok = abs(monitor_mfu - truth) <= MFU_TOLERANCE * truth
    report.check(
        "mfu_vs_truth",
        ok,
        f"monitor {_pct(monitor_mfu)} vs truth {_pct(truth)} (FlopCounterMode "
        f"{flops_per_step / 1e12:.4g} TFLOP per step x {n_steps} steps / {elapsed:.1f} s "
        f"{'CUDA-event' if t.cuda else 'host'} time / {_tf(peak)} TFLOP/s); monitor's FLOPs per step "
        f"{monitor_flops_per_step / 1e12:.4g} T" + (" [CPU smoke: not a measurement]" if smoke else ""),
        monitor_mfu=monitor_mfu,
        truth_mfu=truth,
        monitor_flops_per_step=monitor_flops_per_step,
        elapsed_seconds=elapsed,
        tokens_per_second=snap.tokens_per_second,
    )
    ours = [s for s in syncs if any("/monitor/" in frame or "/integrations/" in frame for frame in s)]
    report.check(
        "no_sync",
        None if smoke else not ours,
        f"{len(ours)} synchronising call(s) from the monitor, {len(syncs) - len(ours)} from the model/loop",
        monitor_sync_stacks=ours[:3],
        other_sync_sites=sorted({s[-3] for s in syncs if s not in ours})[:10],
    )
    metrics(report, scrapes, snap, smoke)
    run_log_gpm(report, log_path, warmup)

    # --- overhead: interleaved blocks with and without a monitor ---
    per_mode: dict[str, list[float]] = {"bare": [], "monitored": []}
    block = max(10, n_steps // 12)
    for rnd in range(6):
        for mode in ("bare", "monitored") if rnd % 2 == 0 else ("monitored", "bare"):
            m = None
            if mode == "monitored":
                m = MFUMonitor(
                    model, opt, dtype="bf16", registry=CollectorRegistry(), handle_sigterm=False, **extra
                )
            per_mode[mode].append(_cuda_seconds(functools.partial(step, rnd), block, t.cuda) / block)
            if m is not None:
                m.close()
    bare, monitored = statistics.median(per_mode["bare"]), statistics.median(per_mode["monitored"])
    diff = monitored / bare - 1
    report.check(
        "overhead",
        None if smoke else abs(diff) < OVERHEAD_TOLERANCE,
        f"median step {bare * 1e3:.2f} ms bare, {monitored * 1e3:.2f} ms monitored ({diff:+.2%})",
        bare_step_seconds=per_mode["bare"],
        monitored_step_seconds=per_mode["monitored"],
    )


def run_log_gpm(report: Report, log_path: Path, warmup: int) -> None:
    """Tensor activity as the log ticks wrote it, read back by ``mfu analyze``'s summary."""
    from monitor.analysis.summary import AnalyzeOptions, analyze

    run = analyze([log_path], AnalyzeOptions(warmup=warmup)).analysis.runs[0]
    shutil.rmtree(log_path.parent, ignore_errors=True)
    t = run.tensor_active
    if t is None:
        report.check("gpm_run_log", None, "no tensor activity in the run log (GPM unsupported here)")
        return
    report.check(
        "gpm_run_log",
        not t.suspect,
        f"mfu analyze: tensor activity median {_pct(t.median)} over {t.records} step records, MFU median "
        f"{_pct(t.mfu_median)}; {t.mfu_above_records} record(s) with MFU above their reading",
        tensor_active=t.model_dump(),
    )


def _pct(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.2%}"


def _scrape(port: int) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = sample.name + "".join(
                f",{k}={v}" for k, v in sorted(sample.labels.items()) if k in ("kind",)
            )
            out.setdefault(key, sample.value)
    return out


def metrics(report: Report, scrapes: list[dict[str, float]], snap: Any, smoke: bool = False) -> None:
    if smoke:  # no NVML on the CPU: the scrapes must carry the run's own figures
        ok = len(scrapes) == 2 and all("training_tokens_total" in s for s in scrapes)
        report.check(
            "metrics", ok, f"{len(scrapes)} scrape(s) with the run's counters (CPU smoke: no GPU gauges)"
        )
        return
    if len(scrapes) < 2:
        report.check("metrics", False, f"{len(scrapes)} scrape(s) of /metrics during the run (2 expected)")
        return
    first, last = scrapes
    sane = {
        "training_gpu_power_watts": lambda v: 10 < v < 2000,
        "training_gpu_energy_joules_total": lambda v: v > 0,
        "training_gpu_sm_clock_hertz": lambda v: 1e8 < v < 5e9,
        "training_gpu_memory_used_bytes": lambda v: v > 2**20,
        "training_gpu_utilization_ratio": lambda v: 0 <= v <= 1,
        "training_gpu_temperature_celsius": lambda v: 0 < v < 110,
    }
    bad = {k: last.get(k) for k, ok in sane.items() if last.get(k) is None or not ok(last[k])}
    tokens = last.get("training_tokens_total", 0) - first.get("training_tokens_total", 0)
    joules = last.get("training_gpu_energy_joules_total", 0) - first.get(
        "training_gpu_energy_joules_total", 0
    )
    per_token = joules / tokens if tokens > 0 and joules > 0 else None
    report.check(
        "metrics",
        not bad and per_token is not None,
        f"telemetry {'sane' if not bad else f'missing or out of range: {bad}'}; "
        f"{'unknown' if per_token is None else f'{per_token * 1e3:.3f} mJ'} per token",
        last_scrape={k: v for k, v in last.items() if k.startswith("training_gpu_")},
        joules_per_token=per_token,
    )
    from monitor.figures.tensor_activity import check_mfu_against_tensor_activity

    active = last.get("training_gpu_tensor_active_ratio,kind=any")
    if active is None:
        report.check(
            "gpm", None, "no tensor activity on /metrics (GPM unsupported here: see the monitor's log)"
        )
        return
    mfu = last.get("training_mfu_ratio")
    result = check_mfu_against_tensor_activity(mfu, active)
    report.check(
        "gpm",
        None if result is None else not result.suspect,
        f"tensor activity {active:.1%}, MFU {_pct(mfu)}"
        + (f": {result.detail}" if result and result.suspect else ""),
        tensor_active=active,
        mfu=mfu,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--train-seconds", type=float, default=60.0, help="length of the monitored run")
    parser.add_argument("--out", type=Path, help="also write the JSON verdict to this file")
    parser.add_argument(
        "--smoke-cpu",
        action="store_true",
        help="run the training checks on the CPU with a tiny model and a stand-in peak: a test of this "
        "script, not a measurement (no detection, matmul or GPU telemetry)",
    )
    args = parser.parse_args(argv)
    if not (math.isfinite(args.train_seconds) and 1 <= args.train_seconds <= 600):
        parser.error("--train-seconds: give 1..600 seconds")

    from monitor.hardware.nvml import open_backend

    report = Report()
    if args.smoke_cpu:
        report.data["smoke_cpu"] = True
        smoke_peaks = {"bf16": {"peak_flops_per_second": SMOKE_PEAK}}
        report.run("training", lambda: training(report, smoke_peaks, args.train_seconds, SMOKE))
        verdict = report.verdict()
        print(json.dumps(verdict, default=str))
        return 0 if verdict["verdict"] == "pass" else 1
    backend = open_backend()
    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:
        cuda = False
    if backend.device_count() == 0 or not cuda:
        if backend.device_count() == 0:
            why = backend.reason or "NVML lists no GPU"
        else:
            why = "torch sees no CUDA device"
        print(f"no GPU: {why} — nothing to check")
        print(json.dumps({**report.verdict(), "verdict": "no GPU", "reason": why}))
        return 0
    peaks: dict[str, Any] = {}

    def detect() -> None:
        peaks.update(detection(report, backend))

    report.run("detection", detect)
    if peaks:
        report.run("matmul", lambda: matmul(report, peaks))
        report.run("training", lambda: training(report, peaks, args.train_seconds))
    verdict = report.verdict()
    text = json.dumps(verdict, default=str)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0 if verdict["verdict"] == "pass" else 1


if __name__ == "__main__":
    sys.exit(main())
