from tortoise import fields, migrations
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    dependencies = [("models", "0001_initial")]

    initial = False

    operations = [
        ops.CreateModel(
            name="AuthThrottleRow",
            fields=[
                (
                    "key",
                    fields.CharField(primary_key=True, unique=True, db_index=True, max_length=64),
                ),
                ("failures", fields.IntField()),
                ("delay_ms", fields.BigIntField()),
                ("blocked_until_ms", fields.BigIntField()),
                ("last_attempt_ms", fields.BigIntField(db_index=True)),
            ],
            options={
                "table": "auth_throttle",
                "app": "models",
                "pk_attr": "key",
                "table_description": "Password-check attempts per login name or account (see service.domain.throttle).",
            },
            bases=["Model"],
        ),
    ]
