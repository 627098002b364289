from django.apps import AppConfig


class SagasConfig(AppConfig):
    name = "apps.sagas"
    label = "sagas"
    verbose_name = "Sagas"

    def ready(self) -> None:
        # Each app declares its sagas in a `sagas` module; importing them here means web and worker
        # processes agree on every saga's steps (and on the definition hash instances record).
        from apps.sagas.definitions import discover_sagas

        discover_sagas()
