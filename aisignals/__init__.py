"""ai-signals: streaming AI-industry signals (hiring, departures, funding, model releases) into alerts and DuckDB."""

__version__ = "0.1.0"
