"""The reusable streaming core: agent-agnostic, over the run log (`redis_stream_response_handler`).

`live_tail` (one XREAD BLOCK per process), `reader` (a run as one response
sends it: catch-up, live, heartbeats, stalls, the window), `framing` (SSE and
plain text), `http_api` (the HTTP contract's handlers) and `redis_clients`
(connections with explicit timeouts, one pool per event loop).
"""
