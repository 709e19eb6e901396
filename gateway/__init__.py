"""An API gateway: a streaming aiohttp reverse proxy with policy chains over a shared store."""

__version__ = "0.1.0"
