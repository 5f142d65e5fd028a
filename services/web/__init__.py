"""The web edge: HTML pages, the JSON API, live updates and the development mailbox (aiohttp)."""
