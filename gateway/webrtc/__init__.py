"""WebRTC adapter (aiortc): not built yet."""
