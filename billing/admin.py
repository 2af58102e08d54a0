"""The billing app's Django admin: what platform staff see and may do.

A model that services change is changed only through them: deletes through
`config.admin.ServiceDeleteAdmin.delete_through_service`, edits in a `save_model` that calls
the update service, actions looping with `config.admin.apply_each`; a record nobody edits by
hand is a `config.admin.ReadOnlyAdmin`. Each registered model is mapped to its service
modules in tests/test_admin_service_rules.py (`SERVICE_MODULES`), whose walk fails on any
delete or change path around them.
"""
