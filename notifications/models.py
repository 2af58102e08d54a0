"""Models of the notifications app; they arrive with its own issue (see ../shared/API.md)."""
