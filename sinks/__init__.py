"""Where results go: DuckDB, alert delivery, metrics, HTTP."""
