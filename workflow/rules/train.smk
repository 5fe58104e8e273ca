"""train rules (to be filled)."""
