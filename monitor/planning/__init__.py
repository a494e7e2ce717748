"""Arithmetic for before and after a run: offline MFU estimate, scaling laws, checks against the papers."""
