"""Models of the billing app; they arrive with its own issue (see ../shared/API.md)."""
