"""analysis rules (to be filled)."""
