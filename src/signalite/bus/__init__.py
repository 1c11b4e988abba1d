"""Cross-node presence and delivery behind the small `Bus` interface (see base.py)."""
