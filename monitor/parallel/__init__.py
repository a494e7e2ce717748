"""Parallel layouts (data, tensor, context, pipeline, expert) and what they do to tokens and FLOPs."""
