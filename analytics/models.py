"""Models of the analytics app; they arrive with its own issue (see ../shared/API.md)."""
