"""Fake fediverse servers that tests run as aiohttp apps on loopback ports."""
