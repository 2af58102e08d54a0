"""Models of the analytics app (usage analytics); none yet."""
