"""Observability of the core: metrics (Prometheus), traces (OpenTelemetry), structured logs
and error reports (Sentry).

Nothing is imported here: ``metrics_dir`` must be loadable before prometheus-client is.
"""
