from tortoise import fields, migrations
from tortoise.indexes import Index
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    dependencies = [("models", "0003_unicode_identity_keys")]

    initial = False

    operations = [
        ops.AddField(
            model_name="UserRow",
            name="delete_time",
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name="UserRow",
            name="purge_time",
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name="UserRow",
            name="state",
            field=fields.SmallIntField(default=1, db_default=1),
        ),
        ops.AddField(
            model_name="UserRow",
            name="version",
            field=fields.BigIntField(default=1, db_default=1),
        ),
        ops.AddIndex(
            model_name="UserRow",
            index=Index(fields=["purge_time"]),
        ),
    ]
