"""Models of the billing app; none yet."""
