"""Integration tier: the ASGI app in process (httpx), DIMSE on loopback (pynetdicom)."""
