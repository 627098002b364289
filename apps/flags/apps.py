from django.apps import AppConfig


class FlagsConfig(AppConfig):
    name = "apps.flags"
    label = "flags"
    verbose_name = "Feature flags"

    def ready(self) -> None:
        from apps.core.context_carriers import carrier_register
        from apps.flags.context import captured_context, set_context
        from apps.flags.declarations import discover

        # Tasks evaluate flags for the subject of the request that caused them: the outbox carries
        # this context inside Taskplane (never to outside consumers) and the worker binds it again.
        carrier_register(name="flags", capture=captured_context, restore=set_context)
        discover(self)  # every app's flags.py; migrate creates the declared flags that are missing
