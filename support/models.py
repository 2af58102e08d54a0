"""Models of the support app (the support desk); none yet."""
