"""Serializers of the analytics app: the request bodies the API accepts and
the shapes it answers with.

Each derives from `config.serializers` (`ModelSerializer`, `Serializer`, `ResponseSerializer`
for a shape only ever answered), so text is strict and an unwritable key is a 400;
tests/api/test_serializer_rules.py walks them all. No serializer writes `tenant` (the view
sets it), and a reference to another tenant-owned object is a
`tenants.serializers.fields.TenantScopedPrimaryKeyRelatedField`, so another tenant's id is
refused like a random one. Serializers check shapes; rules are the services'.
"""
