"""The realtime transport: the WebSocket consumers, the SSE stream, the catch-up they share, and
socket presence (see each module)."""
