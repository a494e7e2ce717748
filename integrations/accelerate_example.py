"""Hugging Face Accelerate: a plain training loop with ``accelerator.backward``, watched by ``MFUMonitor``.

Run it (a tiny Llama on random tokens; on a GPU it uses the GPU):

    python -m integrations.accelerate_example --steps 50 --grad-accum 4 --log runs/acc.jsonl --port 9400
    accelerate launch -m integrations.accelerate_example --steps 200     # one process per GPU

The only lines added to an ordinary Accelerate loop are the ``with MFUMonitor(...)`` block. Two details:

- build the monitor *after* ``accelerator.prepare``: the model is on its device by then (the device picks the
  timer and the peak), and hook the unwrapped model (``accelerator.unwrap_model``) and the optimizer inside
  Accelerate's wrapper (``optimizer.optimizer``). Under ``accelerator.accumulate`` the wrapper's ``step()`` is
  called every micro-batch but steps the inner optimizer only when gradients sync, so the monitor's step
  post-hook closes one step per real optimizer step with every micro-batch's tokens in it. When a fp16 loss
  scaler skips an update the inner step does not run; those tokens count in the next step.
- the compute dtype comes from ``accelerator.mixed_precision`` (autocast runs the matmuls in bf16/fp16 while
  the parameters stay fp32, so the parameters alone would name the wrong peak).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from integrations._common import accelerate_dtype

if TYPE_CHECKING:  # pragma: no cover
    from monitor.figures.snapshot import Snapshot


def tiny_llama(vocab_size: int = 256, hidden_size: int = 64, layers: int = 2) -> Any:
    """A small LlamaForCausalLM (eager attention: the FLOPs convention the monitor's analytic model uses)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
    )
    config._attn_implementation = "eager"
    return LlamaForCausalLM(config)


def random_batches(n: int, batch_size: int, seq_len: int, vocab_size: int, seed: int = 0) -> Any:
    """A dataset of ``n`` batches of random token ids with all-ones attention masks and labels."""
    import torch

    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n):
        ids = torch.randint(0, vocab_size, (batch_size, seq_len), generator=g)
        batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()})

    class Batches(torch.utils.data.Dataset[dict[str, Any]]):
        def __len__(self) -> int:
            return len(batches)

        def __getitem__(self, i: int) -> dict[str, Any]:
            return batches[i]

    return Batches()


def train(
    *,
    steps: int = 20,
    grad_accum: int = 2,
    batch_size: int = 4,
    seq_len: int = 128,
    mixed_precision: str = "no",
    cpu: bool = False,
    model: Any = None,
    **monitor_kwargs: Any,
) -> Snapshot:
    """Train ``steps`` optimizer steps of ``grad_accum`` micro-batches each; the monitor's final snapshot.

    ``monitor_kwargs`` go to ``MFUMonitor`` (port, log_path, peak_flops, registry, ...).
    """
    import torch
    from accelerate import Accelerator

    from monitor import MFUMonitor

    accelerator = Accelerator(
        gradient_accumulation_steps=grad_accum, mixed_precision=mixed_precision, cpu=cpu
    )
    model = model if model is not None else tiny_llama()
    vocab = int(model.config.vocab_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    dataset = random_batches(steps * grad_accum, batch_size, seq_len, vocab)
    loader: Any = torch.utils.data.DataLoader(dataset, batch_size=None)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)

    monitor_kwargs.setdefault("dtype", accelerate_dtype(accelerator.mixed_precision))
    with MFUMonitor(accelerator.unwrap_model(model), optimizer=optimizer.optimizer, **monitor_kwargs) as mon:
        model.train()
        for batch in loader:  # the ordinary Accelerate loop, unchanged
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad()
    return mon.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps (default 20)")
    parser.add_argument("--grad-accum", type=int, default=2, help="micro-batches per step (default 2)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--mixed-precision", default="no", choices=["no", "bf16", "fp16", "fp8"])
    parser.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is there")
    parser.add_argument("--log", default=None, help="JSONL run log path")
    parser.add_argument("--port", type=int, default=None, help="serve /metrics on this port (+LOCAL_RANK)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="per-device peak (default: detected)")
    args = parser.parse_args(argv)
    options: dict[str, Any] = {"log_path": args.log, "port": args.port}
    if args.peak_tflops is not None:
        options["peak_flops"] = args.peak_tflops * 1e12
    snap = train(
        steps=args.steps,
        grad_accum=args.grad_accum,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        mixed_precision=args.mixed_precision,
        cpu=args.cpu,
        **options,
    )
    cum = snap.mfu_cumulative
    mfu = "unknown (no peak: pass --peak-tflops)" if cum is None else f"{cum:.4f}"
    tps = snap.tokens_per_second
    print(
        f"rank {snap.rank}: {snap.steps} steps, {snap.tokens_total} tokens, "
        f"{'-' if tps is None else f'{tps:,.0f}'} tokens/s, MFU {mfu} ({snap.dtype}, {snap.device})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
