"""The layers hold: lower layers never import upper ones (read from every module's imports, lazy ones too).

- ``model/``, ``hardware/``, ``planning/`` and ``figures/`` import none of ``live/``, ``export/``,
  ``analysis/``;
- ``export/`` and ``analysis/`` do not import ``live/`` (they build on ``figures/``);
- ``figures/`` imports no torch (pure arithmetic, usable without it);
- only the façade ``live/monitor.py`` imports both ``live/`` and ``export/``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "monitor"
UPPER = ("monitor.live", "monitor.export", "monitor.analysis")
RULES: dict[str, tuple[str, ...]] = {
    "model": UPPER,
    "hardware": UPPER,
    "planning": UPPER,
    "figures": (*UPPER, "torch"),
    "export": ("monitor.live",),
    "analysis": ("monitor.live",),
}


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _hits(imported: set[str], banned: tuple[str, ...]) -> list[str]:
    return sorted(m for m in imported if any(m == b or m.startswith(b + ".") for b in banned))


@pytest.mark.parametrize("package", sorted(RULES))
def test_a_layer_imports_nothing_above_it(package: str) -> None:
    modules = _modules(package)
    assert modules, f"monitor/{package}/ has no modules"
    bad = {str(p.relative_to(ROOT)): hits for p in modules if (hits := _hits(_imports(p), RULES[package]))}
    assert bad == {}


def test_only_the_facade_imports_both_live_and_export() -> None:
    both = [
        str(p.relative_to(ROOT))
        for p in sorted(ROOT.rglob("*.py"))
        if _hits(_imports(p), ("monitor.live",)) and _hits(_imports(p), ("monitor.export",))
    ]
    assert both == ["live/monitor.py"]


def test_the_rule_reader_sees_lazy_imports(tmp_path: Path) -> None:
    # The checker itself: an import inside a function counts, a relative one is not mistaken for a layer.
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from monitor.live.capture import StepCapture\n    import torch.nn\n")
    assert _hits(_imports(source), RULES["figures"]) == [
        "monitor.live.capture",
        "monitor.live.capture.StepCapture",
        "torch.nn",
    ]
