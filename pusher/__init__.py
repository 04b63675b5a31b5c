"""Qualify, sign and push checkpoints into serving; ramp-ups and rollback."""
