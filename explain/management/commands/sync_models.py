from django.core.management.base import BaseCommand

from explain.services import builtin_models_sync


class Command(BaseCommand):
    help = "Register the built-in models and record whether their weights are on this machine."

    def handle(self, *args, **options):
        for row in builtin_models_sync():
            state = "weights present" if row.weights_present else "weights missing"
            self.stdout.write(f"{row.builtin_key:20s} {state}")
