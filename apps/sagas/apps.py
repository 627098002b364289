from django.apps import AppConfig


class SagasConfig(AppConfig):
    name = "apps.sagas"
    label = "sagas"
    verbose_name = "Sagas"

    def ready(self) -> None:
        # Each app declares its sagas in a `sagas` module; importing them here means web and worker
        # processes agree on every saga's steps (and on the definition hash instances record).
        from apps.core.metrics_view import expose_in_multiprocess_mode
        from apps.sagas.collectors import register_saga_collector
        from apps.sagas.definitions import discover_sagas
        from apps.sagas.waits import signal_subscribers_register

        discover_sagas()
        # Every topic a declared Signal waits on gets its outbox subscriber (sagas.signal:<topic>).
        signal_subscribers_register()
        expose_in_multiprocess_mode(register_saga_collector())
