"""Figures: pure, torch-free arithmetic shared by the live monitor, the exporters and the offline analysis.

The snapshot of a run's figures, windowed rates and the split of lost MFU into causes. Nothing here imports
torch or any upper layer (``live/``, ``export/``, ``analysis/``), so all three can build on it.
"""
