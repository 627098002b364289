from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class OutboxConfig(AppConfig):
    name = "apps.outbox"
    label = "outbox"
    verbose_name = "Outbox"

    def ready(self) -> None:
        # Each app declares its event handlers in a `subscribers` module; registering them here means
        # web and worker processes agree on who subscribes to what.
        autodiscover_modules("subscribers")

        from apps.core.health import health_check_register
        from apps.core.metrics_view import expose_in_multiprocess_mode
        from apps.outbox.collectors import register_outbox_collector
        from apps.outbox.health import OutboxRelay

        expose_in_multiprocess_mode(register_outbox_collector())
        health_check_register(OutboxRelay)  # /health/ fails while the relay makes no progress
