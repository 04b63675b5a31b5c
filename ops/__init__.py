"""Operator tooling: CLI command implementations, Prometheus alerts, Grafana dashboard, runbook."""
