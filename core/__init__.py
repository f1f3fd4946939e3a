"""Orchard core: GUI-free, asyncio-first. Never imports Qt."""

__version__ = "0.1.0"
