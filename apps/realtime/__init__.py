"""Live streams over WebSocket and Server-Sent Events, served by the `realtime` process (docs/realtime.md)."""
