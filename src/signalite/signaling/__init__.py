"""The WebSocket signaling data plane, sans-I/O: frame parsing/building, the routing hub, rate limits."""
