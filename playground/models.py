"""Models of the playground app; they arrive with its own issue (see ../shared/API.md)."""
