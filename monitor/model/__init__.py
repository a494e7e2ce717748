"""The architecture and what it costs: ModelSpec, Hugging Face config import, FLOPs, parameters, memory. Pure: no torch."""
