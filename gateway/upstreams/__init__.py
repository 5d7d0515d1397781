"""Upstreams: selection, circuit breakers, model lists, the HTTP/1.1 client, the router and
discovery."""
