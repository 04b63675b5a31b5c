"""Operator tooling: CLI command implementations, Prometheus rules, runbooks."""
