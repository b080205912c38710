from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from explain.core import zoo
from explain.services import builtin_models_sync


class Command(BaseCommand):
    help = "Install a weights file (.safetensors or a PyTorch state_dict) for a built-in model, after checking it fits."

    def add_arguments(self, parser):
        parser.add_argument("name", help=f"built-in model: {', '.join(zoo.BUILTIN_MODELS)}")
        parser.add_argument("file", type=Path)

    def handle(self, *args, name, file, **options):
        if name not in zoo.BUILTIN_MODELS:
            raise CommandError(f"unknown model {name!r}; built-in models are {', '.join(zoo.BUILTIN_MODELS)}")
        if not file.is_file():
            raise CommandError(f"{file}: no such file")
        try:
            target, checksum = zoo.import_weights(name, file)
        except zoo.WeightsInvalid as error:
            raise CommandError(f"{file.name} was not installed: {error}") from None
        builtin_models_sync()
        self.stdout.write(f"installed {name} weights at {target} (sha256 {checksum})")
