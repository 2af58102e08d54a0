"""Models of the notifications app (notifications and webhooks); none yet."""
