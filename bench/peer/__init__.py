"""Bench-only app: djangorestframework-api-key used as its guide shows for keys that belong to
an organization (a custom `AbstractAPIKey` model with a foreign key, its manager and a
`BaseHasAPIKey` permission). Installed by bench/auth_overhead.py for its run only."""
