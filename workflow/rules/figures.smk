"""figures rules (to be filled)."""
