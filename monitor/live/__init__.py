"""The live monitor: hooks on the training loop, timing without device synchronisation, windowed rates."""
