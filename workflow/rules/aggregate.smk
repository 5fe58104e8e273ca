"""aggregate rules (to be filled)."""
