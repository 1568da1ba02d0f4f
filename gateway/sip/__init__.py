"""SIP adapter (RFC 3261): not built yet."""
