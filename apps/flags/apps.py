from django.apps import AppConfig


class FlagsConfig(AppConfig):
    name = "apps.flags"
    label = "flags"
    verbose_name = "Feature flags"

    def ready(self) -> None:
        from apps.flags.declarations import discover

        discover(self)  # every app's flags.py; migrate creates the declared flags that are missing
