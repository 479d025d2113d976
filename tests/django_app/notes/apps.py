from django.apps import AppConfig


class NotesConfig(AppConfig):
    name = "notes"

    def ready(self):
        from . import handlers  # noqa: F401  (registers the handlers)
