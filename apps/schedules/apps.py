from django.apps import AppConfig


class SchedulesConfig(AppConfig):
    name = "apps.schedules"
    label = "schedules"
    verbose_name = "Schedules"

    def ready(self) -> None:
        from apps.core.context_carriers import carrier_register
        from apps.schedules.fire_context import capture_fire, restore_fire

        # The fire a task message stands for rides the message's internal context (and its retry
        # rows), so the worker can record the fire's state; it never reaches an outside consumer.
        carrier_register(name="schedules.fire", capture=capture_fire, restore=restore_fire)

        from apps.core.metrics_view import expose_in_multiprocess_mode
        from apps.schedules.collectors import register_due_unfired_collector

        expose_in_multiprocess_mode(register_due_unfired_collector())
