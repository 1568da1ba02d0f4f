"""Media plane: RTP, jitter buffers, codecs, mixing. Knows nothing of signaling."""
