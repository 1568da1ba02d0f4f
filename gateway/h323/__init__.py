"""H.323 adapter (RAS, H.225.0, H.245): not built yet."""
