from tortoise import fields, migrations
from tortoise.indexes import Index
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    dependencies = [("models", "0006_read_indexes")]

    initial = False

    operations = [
        ops.CreateModel(
            name="EventMarkRow",
            fields=[
                (
                    "name",
                    fields.CharField(primary_key=True, unique=True, db_index=True, max_length=200),
                ),
                ("sequence", fields.BigIntField()),
            ],
            options={
                "table": "event_marks",
                "app": "models",
                "pk_attr": "name",
                "table_description": "Named positions in the feed: how far it was pruned, and each relay's checkpoint.",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="EventRow",
            fields=[
                (
                    "id",
                    fields.BigIntField(
                        generated=True, primary_key=True, unique=True, db_index=True
                    ),
                ),
                ("sequence", fields.BigIntField(unique=True)),
                ("type", fields.SmallIntField()),
                ("user_id", fields.BigIntField()),
                ("other_user_id", fields.BigIntField(null=True)),
                ("actor", fields.TextField(default="", unique=False)),
                ("resource", fields.TextField(unique=False)),
                ("create_time", fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={
                "table": "events",
                "app": "models",
                "indexes": [
                    Index(fields=["user_id", "sequence"]),
                    Index(fields=["other_user_id", "sequence"]),
                    Index(fields=["create_time"]),
                ],
                "pk_attr": "id",
                "table_description": "One change-feed event, written in the transaction of the change (the outbox).",
            },
            bases=["Model"],
        ),
    ]
