"""Incremental training with a holdout, signed checkpoints and exact resume.

``loopline run trainer`` runs :class:`trainer.core.Trainer` (``trainer.main``). Pieces:
``learner`` (test-then-train on one example), ``metrics`` (progressive, overall / per
window / holdout), ``windows`` (anomalous event-time windows), ``decode`` and ``batch``
(records to learner, position kept exactly), ``checkpointer`` and ``state`` (restore,
save, announce, retain), ``commands`` (the control channel), ``replay``, ``exporter``
(Prometheus).
"""
