"""mfu-monitor: live model FLOPs utilization for LLM training.

    from monitor import MFUMonitor
    with MFUMonitor(model, optimizer=opt, log_path="run.jsonl", port=9400) as mon:
        for batch in loader:
            loss = model(**batch).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
    print(mon.snapshot())

Names are imported lazily so that ``import monitor`` (and the planning CLI) starts without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "MFUMonitor": "monitor.live.monitor",
    "ModelSpec": "monitor.model.spec",
    "spec_from_hf_config": "monitor.model.hf_config",
    "load_preset": "monitor.model.presets",
    "flops_per_token": "monitor.model.flops",
    "count_params": "monitor.model.params",
    "detect_accelerator": "monitor.hardware.detect",
    "training_memory": "monitor.model.memory",
    "compute_optimal": "monitor.planning.scaling",
    "analyze": "monitor.analysis.summary",
    "InputError": "monitor.errors",
}

__all__ = [*sorted(_EXPORTS), "__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'monitor' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
