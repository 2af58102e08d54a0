"""Models of the security app; none yet."""
