"""Admin API, metrics and (later) the web page."""
