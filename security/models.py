"""Models of the security app; they arrive with its own issue (see ../shared/API.md)."""
