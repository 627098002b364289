from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "apps.core"
    label = "core"
    verbose_name = "Taskplane core"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from apps.core import openapi, telemetry  # noqa: F401  (openapi registers schema extensions)
        from apps.core.groups import groups_apply_after_migrate

        # After every migrate, so models added later join the operator groups (apps/core/groups.py).
        post_migrate.connect(groups_apply_after_migrate, dispatch_uid="taskplane.core.groups")

        telemetry.configure_from_settings()
