from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from explain.core import zoo
from explain.services import builtin_models_sync, builtin_weights_fetch


class Command(BaseCommand):
    help = ("Download a built-in model's pretrained weights from where torchvision or timm publishes them "
            "(or from SALIENCY_WEIGHTS_MIRROR), check them and install them as import_weights does.")

    def add_arguments(self, parser):
        parser.add_argument("name", help=f"built-in model: {', '.join(zoo.BUILTIN_MODELS)}")
        parser.add_argument("--force", action="store_true", help="fetch even where weights are installed already")

    def handle(self, *args, name, force, **options):
        if name not in zoo.BUILTIN_MODELS:
            raise CommandError(f"unknown model {name!r}; built-in models are {', '.join(zoo.BUILTIN_MODELS)}")
        row = next(r for r in builtin_models_sync() if r.builtin_key == name)
        bar = None

        def progress(done: int, total: int | None) -> None:
            nonlocal bar
            if bar is None:
                bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name,
                           file=self.stderr._out, disable=None)
            bar.update(done - bar.n)

        try:
            row = builtin_weights_fetch(model=row, force=force, progress=progress)
        except ValueError as error:
            raise CommandError(f"{name}: {error}") from None
        finally:
            if bar is not None:
                bar.close()
        record = row.weights_fetch
        self.stdout.write(f"installed {name} weights at {zoo.weights_dir() / (name + '.safetensors')} "
                          f"from {record.get('url')} ({record.get('checksum')}; sha256 of the download "
                          f"{record.get('sha256')})")
