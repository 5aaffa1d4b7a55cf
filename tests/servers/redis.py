"""Fixtures that start real Redis/Valkey servers (filled in by the RedisStore work)."""
