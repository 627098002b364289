# Issue 15 §6 and §10: outbox and inbox times come from the database clock, and the flag evaluation
# context moves from the public headers into the internal context column.
#
# Numbered 0004 because 0003 is reserved for the relay workstream's migration; when both are merged,
# this one's dependency becomes that 0003.

import django.db.models.functions.datetime
from django.db import migrations, models

_POSTGRES = """
UPDATE outbox_outboxmessage
SET context = jsonb_set(context, '{carriers}',
                        COALESCE(context->'carriers', '{}'::jsonb) || jsonb_build_object('flags', headers->'flags_context')),
    headers = headers - 'flags_context'
WHERE headers ? 'flags_context'
"""
_SQLITE = """
UPDATE outbox_outboxmessage
SET context = json_set(context, '$.carriers', json_object('flags', json(json_extract(headers, '$.flags_context')))),
    headers = json_remove(headers, '$.flags_context')
WHERE json_type(headers, '$.flags_context') IS NOT NULL
"""


def move_flags_context(apps, schema_editor):
    # Rows written before this release carry the flag context as a public header; a pending one
    # would still show it to outside consumers. The flags app restores it from context.carriers.flags.
    sql = _POSTGRES if schema_editor.connection.vendor == "postgresql" else _SQLITE
    schema_editor.execute(sql)


class Migration(migrations.Migration):

    dependencies = [
        ('outbox', '0003_relay_status_holds_key'),
    ]

    operations = [
        migrations.AlterField(
            model_name='inboxentry',
            name='processed_at',
            field=models.DateTimeField(db_default=django.db.models.functions.datetime.Now()),
        ),
        migrations.AlterField(
            model_name='outboxmessage',
            name='available_at',
            field=models.DateTimeField(db_default=django.db.models.functions.datetime.Now(), help_text='Not relayed before this time.'),
        ),
        migrations.AlterField(
            model_name='outboxmessage',
            name='created_at',
            field=models.DateTimeField(db_default=django.db.models.functions.datetime.Now()),
        ),
        migrations.RunPython(move_flags_context, migrations.RunPython.noop),
    ]
