"""What persists: the data/config/state paths, atomic JSON, settings and secrets."""
