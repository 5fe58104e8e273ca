"""scaling rules (to be filled)."""
