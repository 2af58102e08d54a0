"""Models of the notifications app (notifications and webhooks); none yet.

A tenant's data builds on `tenants.models.TenantOwned` (UUID `id`, `tenant`, `created_at`,
`updated_at`), anything outside a tenant on `config.models.TimestampedModel`. Every unique
constraint of a tenant-owned model includes `tenant` (tests/test_citus_readiness.py). Models
hold fields, constraints and read-only properties; their state changes are the services', and
each model's factory lives in tests/notifications/factories.py.
"""
