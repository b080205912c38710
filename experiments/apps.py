from django.apps import AppConfig


class ExperimentsConfig(AppConfig):
    name = "experiments"

    def ready(self) -> None:
        # Runs are shareable like every other result.
        from .views import register_share_view

        register_share_view()
