from tortoise import fields, migrations
from tortoise.fields.base import OnDelete
from tortoise.indexes import Index
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    initial = True

    operations = [
        ops.CreateModel(
            name="LedgerRow",
            fields=[
                (
                    "id",
                    fields.BigIntField(
                        generated=True, primary_key=True, unique=True, db_index=True
                    ),
                ),
                ("kind", fields.CharField(max_length=16)),
                ("from_user_id", fields.BigIntField(null=True)),
                ("to_user_id", fields.BigIntField()),
                ("amount", fields.BigIntField()),
                ("request_id", fields.CharField(unique=True, max_length=64)),
                ("create_time", fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={
                "table": "ledger",
                "app": "models",
                "indexes": [
                    Index(fields=["from_user_id", "id"]),
                    Index(fields=["to_user_id", "id"]),
                ],
                "pk_attr": "id",
                "table_description": "One money movement: a deposit (no sender) or a transfer.",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="ServiceSecret",
            fields=[
                (
                    "name",
                    fields.CharField(primary_key=True, unique=True, db_index=True, max_length=64),
                ),
                ("value", fields.CharField(max_length=255)),
            ],
            options={
                "table": "service_secrets",
                "app": "models",
                "pk_attr": "name",
                "table_description": "Secrets the service makes itself on first start (e.g. the page-token key).",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="UserRow",
            fields=[
                (
                    "id",
                    fields.BigIntField(
                        generated=True, primary_key=True, unique=True, db_index=True
                    ),
                ),
                ("username", fields.CharField(max_length=32)),
                ("username_key", fields.CharField(unique=True, max_length=96)),
                ("email", fields.CharField(max_length=254)),
                ("email_key", fields.CharField(unique=True, max_length=320)),
                ("display_name", fields.CharField(default="", max_length=128)),
                ("password_hash", fields.CharField(max_length=255)),
                ("balance", fields.BigIntField(default=0)),
                ("create_time", fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ("update_time", fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={
                "table": "users",
                "app": "models",
                "indexes": [Index(fields=["create_time", "id"])],
                "pk_attr": "id",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="PostRow",
            fields=[
                (
                    "id",
                    fields.BigIntField(
                        generated=True, primary_key=True, unique=True, db_index=True
                    ),
                ),
                (
                    "user",
                    fields.ForeignKeyField(
                        "models.UserRow",
                        source_field="user_id",
                        db_constraint=True,
                        to_field="id",
                        related_name="posts",
                        on_delete=OnDelete.CASCADE,
                    ),
                ),
                ("title", fields.CharField(max_length=200)),
                ("body", fields.TextField(unique=False)),
                ("create_time", fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={
                "table": "posts",
                "app": "models",
                "indexes": [Index(fields=["user_id", "id"])],
                "pk_attr": "id",
            },
            bases=["Model"],
        ),
    ]
