"""State changes of the analytics app: the one place their rules live, for
every caller (API, admin, management commands, tasks).

A service is named `<entity>_<action>` (`invoice_create`, `invoice_void`) and takes keyword
arguments only: `tenant` and `actor` to create, the object (`invoice=`) and `actor` to change,
`actor_permissions` when its rules depend on them. It runs under `@transaction.atomic`, locks
the rows its checks read (`select_for_update`), refuses with `config.exceptions`
ApplicationError subclasses, updates through `config.services.model_update`, and records its
event with `audit.services.record` in the same transaction. tests/audit/test_service_coverage.py
fails until each new service is exercised there (with its event) or exempt with a reason.
"""
