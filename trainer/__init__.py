"""Incremental training with a holdout, signed checkpoints and exact resume."""
