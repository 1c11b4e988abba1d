"""Persistence of channels and streams behind the small `ChannelStore` interface (see base.py)."""
