"""The tenants app's viewsets, one module per area (tenants, organizations, members, themes)."""
