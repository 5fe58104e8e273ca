"""realdata rules (to be filled)."""
