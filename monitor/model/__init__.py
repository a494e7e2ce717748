"""The architecture and what it costs: ModelSpec, HF config import, FLOPs, parameters, memory. No torch."""
