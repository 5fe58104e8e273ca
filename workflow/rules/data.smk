"""data rules (to be filled)."""
