"""Arithmetic for before and after a run: offline MFU estimate, scaling laws, validation against published figures."""
