"""Seeing the platform: Prometheus metrics, structured logs, the audit log, the admin dashboard."""
