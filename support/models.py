"""Models of the support app; they arrive with its own issue (see ../shared/API.md)."""
