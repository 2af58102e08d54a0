"""API views of the support app: thin viewsets on the app kit
(`tenants.api`).

A tenant-owned resource is a `TenantCrudViewSet`, or a `TenantScopedViewSet` composed with the
`ServiceCreateMixin`, `ServiceUpdateMixin` and `ServiceDestroyMixin` it has: `queryset`,
`serializer_class`, `filterset_class`, `permission_area` and the services that write. A view
parses, calls a service or a selector and answers; it holds no rule. A custom action names its
permission in `required_permissions`; an action without one is refused.
"""
