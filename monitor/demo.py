"""`mfu demo`: train a small GPT on generated text with the monitor on: live view, /metrics, run log, summary.

The model is GPT-2-shaped, written in plain torch (no transformers): learned token and position embeddings,
pre-LayerNorm blocks with biased q/k/v/o projections, a 4x GELU MLP, a final LayerNorm and an LM head tied to
the token embedding. ``demo_spec`` describes it exactly as a ``ModelSpec`` (a test checks its FLOPs per token
against ``torch.utils.flop_counter.FlopCounterMode`` on the real module). Attention is written out (Q·Kᵀ,
mask, softmax, ·V) so every matmul is one FlopCounterMode sees: full S×S scores, the default convention.

The text is generated (deterministic, a small grammar of sentences and sums), character-level: the loss falls
visibly within a minute. On CPU the peak is measured here (a matmul rate, like ``mfu calibrate``), so the MFU
shown is against what this machine's matmuls actually reach; on a GPU it is the detected dense peak.
"""

from __future__ import annotations

import math
import random
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from monitor.model.spec import ModelSpec


@dataclass(frozen=True)
class DemoConfig:
    vocab_size: int = 96
    block_size: int = 128
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 256


class _Block(nn.Module):
    def __init__(self, c: DemoConfig) -> None:
        super().__init__()
        self.n_head = c.n_head
        self.ln_1 = nn.LayerNorm(c.d_model)
        self.qkv = nn.Linear(c.d_model, 3 * c.d_model)
        self.proj = nn.Linear(c.d_model, c.d_model)
        self.ln_2 = nn.LayerNorm(c.d_model)
        self.fc = nn.Linear(c.d_model, 4 * c.d_model)
        self.fc_out = nn.Linear(4 * c.d_model, c.d_model)
        mask = torch.ones(c.block_size, c.block_size, dtype=torch.bool).tril()
        self.register_buffer("causal", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        h = self.n_head
        q, k, v = self.qkv(self.ln_1(x)).split(d, dim=-1)
        q = q.view(b, s, h, d // h).transpose(1, 2)
        k = k.view(b, s, h, d // h).transpose(1, 2)
        v = v.view(b, s, h, d // h).transpose(1, 2)
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(d // h))
        causal: torch.Tensor = self.causal  # type: ignore[assignment]
        scores = scores.masked_fill(~causal[:s, :s], float("-inf"))
        y = F.softmax(scores, dim=-1) @ v
        x = x + self.proj(y.transpose(1, 2).reshape(b, s, d))
        return x + self.fc_out(F.gelu(self.fc(self.ln_2(x))))


class DemoGPT(nn.Module):
    """A GPT-2-shaped character model; ``forward(idx, targets=None) -> (logits, loss)``."""

    def __init__(self, c: DemoConfig) -> None:
        super().__init__()
        self.config_ = c
        self.tok = nn.Embedding(c.vocab_size, c.d_model)
        self.pos = nn.Embedding(c.block_size, c.d_model)
        self.blocks = nn.ModuleList(_Block(c) for _ in range(c.n_layer))
        self.ln_f = nn.LayerNorm(c.d_model)
        self.head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        self.head.weight = self.tok.weight  # tied, as GPT-2
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> tuple[torch.Tensor, Any]:
        s = idx.shape[-1]
        x = self.tok(idx) + self.pos(torch.arange(s, device=idx.device))
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        return logits, loss


def demo_spec(c: DemoConfig) -> ModelSpec:
    """The exact ModelSpec of ``DemoGPT(c)`` (GPT-2 conventions: biases, LayerNorm, GELU MLP, tied head)."""
    return ModelSpec(
        model_type="gpt2",
        name="mfu-demo-gpt",
        num_layers=c.n_layer,
        hidden_size=c.d_model,
        vocab_size=c.vocab_size,
        num_heads=c.n_head,
        num_kv_heads=c.n_head,
        head_dim=c.d_model // c.n_head,
        v_head_dim=c.d_model // c.n_head,
        intermediate_size=4 * c.d_model,
        mlp_gated=False,
        mlp_bias=True,
        qkv_bias=True,
        o_bias=True,
        norm="layernorm",
        tie_word_embeddings=True,
        position_embeddings=c.block_size,
    )


# --- text ---
_NAMES = ["Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Frances", "John", "Ken", "Margaret"]
_VERBS = ["writes", "reads", "tests", "builds", "measures", "profiles", "trains", "fixes"]
_OBJECTS = [
    "a compiler",
    "the kernel",
    "a model",
    "the scheduler",
    "a proof",
    "the network",
    "a parser",
    "the cache",
]
_ADVERBS = ["carefully", "quickly", "twice", "at night", "with care", "again", "on Monday", "for fun"]


def generate_text(chars: int, seed: int = 0) -> str:
    """Deterministic practice text: sentences from a small grammar and two-digit sums (learnable)."""
    rng = random.Random(seed)
    parts: list[str] = []
    size = 0
    while size < chars:
        if rng.random() < 0.3:
            a, b = rng.randint(0, 99), rng.randint(0, 99)
            line = f"{a} + {b} = {a + b}.\n"
        else:
            line = (
                f"{rng.choice(_NAMES)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_ADVERBS)}.\n"
            )
        parts.append(line)
        size += len(line)
    return "".join(parts)[:chars]


class CharData:
    """Character-level batches of (input ids, next-character targets) from a text."""

    def __init__(self, text: str, block_size: int, vocab_size: int, seed: int = 0) -> None:
        alphabet = sorted(set(text))
        if len(alphabet) > vocab_size:
            raise ValueError(
                f"text has {len(alphabet)} distinct characters, more than vocab_size {vocab_size}"
            )
        self.stoi = {ch: i for i, ch in enumerate(alphabet)}
        self.data = torch.tensor([self.stoi[ch] for ch in text], dtype=torch.long)
        self.block = block_size
        self.gen = torch.Generator().manual_seed(seed)

    def batch(self, batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(0, len(self.data) - self.block - 1, (batch_size,), generator=self.gen)
        x = torch.stack([self.data[s : s + self.block] for s in starts.tolist()])
        y = torch.stack([self.data[s + 1 : s + 1 + self.block] for s in starts.tolist()])
        return x.to(device), y.to(device)


# --- peak ---
CALIBRATE_SECONDS = 5.0


def cpu_peak(con: Any) -> tuple[float, str]:
    """The CPU's fp32 peak for the demo: the cached ``mfu calibrate`` result for this machine if there is one,
    else a measurement of ``CALIBRATE_SECONDS`` (best batch), cached for the next run.

    Measuring anew each run made the MFU swing with whatever else the machine did at that moment (41-68% on
    one shared 2-core machine); with one cached measurement, two runs differ only by their training speed."""
    from monitor.hardware.calibrate import calibrate, load_cached_calibration

    cached = load_cached_calibration("fp32", "cpu")
    if cached is not None:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(cached.measured_at))
        return cached.flops_per_second, f"this CPU's fp32 matmul rate, cached by `mfu calibrate` on {when}"
    con.print("[dim]measuring this CPU's fp32 matmul rate for the peak (as `mfu calibrate` does)...[/dim]")
    result = calibrate("fp32", device="cpu", seconds=CALIBRATE_SECONDS, cache=True)
    note = "this CPU's fp32 matmul rate, measured now (`mfu calibrate`)"
    return result.flops_per_second, note + (", cached for the next runs" if result.cached else "")


def free_port(preferred: int, addr: str = "127.0.0.1") -> tuple[int, bool]:
    """``preferred`` if it can be bound, else a free port the OS picks; and whether it fell back."""
    for port in (preferred, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((addr, port))
            except OSError:
                continue
            return int(s.getsockname()[1]), port != preferred and preferred != 0
    raise OSError("no free port")


# --- the demo ---
@dataclass
class DemoResult:
    steps: int
    tokens: int
    seconds: float
    tokens_per_second: float | None
    mfu: float | None
    peak_flops_per_second: float | None
    peak_source: str | None
    peak_note: str | None
    flops_per_token: float
    loss_first: float | None
    loss_last: float | None
    log_path: str | None
    port: int | None


def run_demo(
    *,
    steps: int | None = None,
    seconds: float = 60.0,
    port: int | None = 9400,
    log_path: str | Path | None = None,
    batch_size: int = 8,
    config: DemoConfig | None = None,
    live: bool = True,
    console: Any = None,
    threads: int | None = None,
) -> DemoResult:
    """Train DemoGPT with an MFUMonitor for ``steps`` steps (or about ``seconds``); return the figures."""
    from monitor.cli._output import console as plain_console
    from monitor.live.monitor import MFUMonitor

    con = console or plain_console()
    c = config or DemoConfig()
    if threads:
        torch.set_num_threads(threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    text = generate_text(200_000)
    data = CharData(text, c.block_size, c.vocab_size)
    model = DemoGPT(c).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    spec = demo_spec(c)

    peak_note = None
    peak_kw: dict[str, Any] = {}
    if device.type == "cpu":
        peak, peak_note = cpu_peak(con)
        peak_kw = {"peak_flops": peak, "peak_source": "calibrated"}
    chosen_port = None
    if port is not None:
        chosen_port, fell_back = free_port(port)
        if fell_back:
            con.print(f"[yellow]port {port} is busy; serving /metrics on {chosen_port} instead[/yellow]")
    if log_path is None:
        log_path = Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S.jsonl")
    tokens_per_step = batch_size * c.block_size
    budget = steps * tokens_per_step if steps else None
    losses: list[float] = []
    with MFUMonitor(
        model,
        opt,
        spec=spec,
        port=chosen_port,
        log_path=log_path,
        token_budget=budget,
        run=time.strftime("demo-%Y%m%d-%H%M%S"),
        warmup_steps=3,
        window_steps=20,
        **peak_kw,
    ) as mon:
        if mon.port is not None:
            where = f"run log: {log_path}" if mon.run_log_enabled else "no run log"
            con.print(f"/metrics: http://127.0.0.1:{mon.port}/metrics   {where}", markup=False)
        if live:
            mon.start_view(con)
        t0 = time.perf_counter()
        step = 0
        while (steps is not None and step < steps) or (steps is None and time.perf_counter() - t0 < seconds):
            x, y = data.batch(batch_size, device)
            _, loss = model(x, y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if step % 10 == 0 or (steps is not None and step == steps - 1):
                losses.append(float(loss.detach()))  # the demo's one sync, every 10 steps, for the summary
            step += 1
        snap = mon.close()
    return DemoResult(
        steps=snap.resolved_steps,
        tokens=snap.tokens_total,
        seconds=snap.elapsed_seconds,
        tokens_per_second=snap.tokens_per_second,
        mfu=snap.mfu_cumulative if snap.mfu_cumulative is not None else snap.mfu,
        peak_flops_per_second=snap.peak_flops_per_second,
        peak_source=snap.peak_source,
        peak_note=peak_note,
        flops_per_token=snap.flops_per_token or 0.0,
        loss_first=losses[0] if losses else None,
        loss_last=losses[-1] if losses else None,
        log_path=str(log_path) if mon.run_log_enabled else None,
        port=mon.port,
    )
