"""PostgreSQL triggers that make the audit log append-only.

- audit_auditevent: UPDATE is refused except the one-time sealing of an unsealed event (only
  seq, prev_hash and hash change, from NULL/empty); DELETE is refused; TRUNCATE is refused.
- audit_auditcheckpoint: UPDATE, DELETE and TRUNCATE are refused.

The one door: a transaction that set `audit.allow_purge` to a tenant's id (transaction-local) may
DELETE that tenant's rows, and no others; only audit.services.chain_purge does, and it records
the purge on the platform chain. The platform chain can never be deleted. The test
database's connections set `audit.allow_truncate` so that the test runner may empty tables
between tests; production connections never do.
"""

from django.db import migrations

FUNCTIONS = r"""
CREATE OR REPLACE FUNCTION audit_refuse_change() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        IF current_setting('audit.allow_truncate', true) = 'on' THEN
            RETURN NULL;
        END IF;
        RAISE EXCEPTION 'audit log is append-only: TRUNCATE of % refused', TG_TABLE_NAME
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF TG_OP = 'DELETE' THEN
        IF OLD.tenant_id IS NOT NULL
           AND OLD.tenant_id::text = current_setting('audit.allow_purge', true) THEN
            RETURN OLD;
        END IF;
        RAISE EXCEPTION 'audit log is append-only: DELETE from % refused', TG_TABLE_NAME
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF TG_TABLE_NAME = 'audit_auditevent'
       AND OLD.seq IS NULL AND NEW.seq IS NOT NULL
       AND (to_jsonb(NEW) - 'seq' - 'prev_hash' - 'hash')
           = (to_jsonb(OLD) - 'seq' - 'prev_hash' - 'hash') THEN
        RETURN NEW;  -- sealing an unsealed event
    END IF;
    RAISE EXCEPTION 'audit log is append-only: UPDATE of % refused', TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
"""

TRIGGERS = [
    "CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
    "FOR EACH ROW EXECUTE FUNCTION audit_refuse_change()",
    "CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
    "FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change()",
]
TABLES = ("audit_auditevent", "audit_auditcheckpoint")


def install(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(FUNCTIONS, params=None)
    for table in TABLES:
        for trigger in TRIGGERS:
            schema_editor.execute(trigger.format(table=table))


def uninstall(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table in TABLES:
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
    schema_editor.execute("DROP FUNCTION IF EXISTS audit_refuse_change()")


class Migration(migrations.Migration):
    dependencies = [("audit", "0002_chain_sealing")]

    operations = [migrations.RunPython(install, uninstall)]
