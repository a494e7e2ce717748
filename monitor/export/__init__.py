"""Readers of the monitor's snapshots: Prometheus collector, JSONL run log, terminal view."""
