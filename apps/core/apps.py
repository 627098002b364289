from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "apps.core"
    label = "core"
    verbose_name = "Taskplane core"

    def ready(self) -> None:
        from apps.core import openapi, telemetry  # noqa: F401  (openapi registers schema extensions)

        telemetry.configure_from_settings()
