from django.apps import AppConfig


class SchedulesConfig(AppConfig):
    name = "apps.schedules"
    label = "schedules"
    verbose_name = "Schedules"

    def ready(self) -> None:
        from apps.core.metrics_view import expose_in_multiprocess_mode
        from apps.schedules.collectors import register_due_unfired_collector

        expose_in_multiprocess_mode(register_due_unfired_collector())
