"""Test support: real processes on loopback ports, and small real upstreams."""
