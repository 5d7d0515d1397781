"""Serving one request: routes, body, auth, the flow, the relay, streamed framing."""
