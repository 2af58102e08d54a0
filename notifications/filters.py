"""FilterSets of the notifications app (django-filter), each named by a viewset's
`filterset_class`.

The queryset a FilterSet narrows is already the request tenant's, but a filter choosing among
other objects (`ModelChoiceFilter`) builds its own: it takes
`queryset=tenants.serializers.fields.tenant_queryset(Model)`, so no other tenant's row is
listed or matched. Timestamps use `config.filters.UTCDateTimeFilter`; text filters set a
`max_length`.
"""
