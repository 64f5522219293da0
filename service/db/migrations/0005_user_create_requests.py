from tortoise import fields, migrations
from tortoise.fields.base import OnDelete
from tortoise.indexes import Index
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    dependencies = [("models", "0004_user_lifecycle")]

    initial = False

    operations = [
        ops.CreateModel(
            name="CreateRequestRow",
            fields=[
                (
                    "request_id",
                    fields.CharField(primary_key=True, unique=True, db_index=True, max_length=64),
                ),
                (
                    "user",
                    fields.ForeignKeyField(
                        "models.UserRow",
                        source_field="user_id",
                        db_constraint=True,
                        to_field="id",
                        related_name="create_requests",
                        on_delete=OnDelete.CASCADE,
                    ),
                ),
                ("fingerprint", fields.CharField(max_length=64)),
                ("create_time", fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={
                "table": "user_create_requests",
                "app": "models",
                "indexes": [Index(fields=["user_id"])],
                "pk_attr": "request_id",
                "table_description": "The request_id of an idempotent CreateUser and the user it created (aip.dev/155).",
            },
            bases=["Model"],
        ),
    ]
