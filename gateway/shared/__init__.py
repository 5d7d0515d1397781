"""State shared by several gateways through Redis (imported only when LANEGATE_REDIS_URL is set)."""
