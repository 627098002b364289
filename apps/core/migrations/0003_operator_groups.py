"""The operators and viewers groups (apps/core/groups.py); post_migrate re-applies the policy after every migrate."""

from django.db import migrations


def create_groups(apps, schema_editor):
    from apps.core.groups import groups_apply_policy

    groups_apply_policy(apps=apps, using=schema_editor.connection.alias)


def delete_groups(apps, schema_editor):
    from apps.core.groups import OPERATORS, VIEWERS

    apps.get_model("auth", "Group").objects.using(schema_editor.connection.alias).filter(
        name__in=[OPERATORS, VIEWERS]
    ).delete()


class Migration(migrations.Migration):

    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("core", "0002_operator_action"),
    ]

    operations = [migrations.RunPython(create_groups, delete_groups)]
