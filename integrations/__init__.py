"""Framework integrations that build an ``MFUMonitor`` from a trainer.

- ``integrations.hf_trainer.MFUTrainerCallback``: Hugging Face ``transformers.Trainer`` (needs transformers);
- ``integrations.lightning.MFUCallback``: PyTorch Lightning (needs lightning or pytorch_lightning);
- ``integrations.accelerate_example``: a runnable plain loop with ``accelerator.backward`` (needs accelerate).

Nothing is imported here, so each submodule needs only its own framework. See ``docs/integrations.md``.
"""
