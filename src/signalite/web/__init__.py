"""Thin aiohttp adapters: read the wire, call the core, write the wire."""
