"""Observation: per-request measurement, rolling percentiles, metrics, the ledger, status and
the dashboard."""
