"""HTTP API, health and status pages."""
