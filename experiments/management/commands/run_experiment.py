"""Run an experiment without the browser: the same services, synchronously, in this process.

    python manage.py run_experiment --model efficientnet_lite0 --dataset sample-localisation \
        --methods gradcam gradcam+enhance baseline_random --protocols torchray-pointing-v1 chefer-segmentation-v1

A method followed by ``+enhance`` runs with the sliding-window enhancement. ``--queue`` hands
the run to the workers instead (as the site does) and returns at once.
"""
from __future__ import annotations

import json

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from experiments import selectors, services
from experiments.models import Record
from explain.models import ClassifierModel


class Command(BaseCommand):
    help = "Run an experiment (model × data set × methods × protocols) synchronously and print its table."

    def add_arguments(self, parser):
        parser.add_argument("--model", required=True, help="built-in key (efficientnet_lite0) or the name of a model of --user")
        parser.add_argument("--dataset", required=True, choices=sorted(services.DATASET_KINDS))
        parser.add_argument("--path", action="append", default=[], metavar="FIELD=PATH",
                            help="data-set path field, e.g. --path root=/data/VOCdevkit/VOC2007 (repeatable)")
        parser.add_argument("--methods", nargs="+", required=True, help="method keys; append +enhance for the enhancement")
        parser.add_argument("--protocols", nargs="+", required=True, help="protocol names (e.g. thesis-v1)")
        parser.add_argument("--first", type=int, help="take the first N images")
        parser.add_argument("--random", type=int, help="take N random images (with --subset-seed)")
        parser.add_argument("--subset-seed", type=int, default=0)
        parser.add_argument("--seed", type=int, default=0, help="seed of random methods and the random baseline")
        parser.add_argument("--shard-size", type=int, help="images per shard (default: about five minutes of work)")
        parser.add_argument("--name", default="", help="run name (default: derived from the arguments)")
        parser.add_argument("--user", default="cli", help="owner of the run (created, without a password, if absent)")
        parser.add_argument("--queue", action="store_true", help="queue the run on the workers instead of running it here")
        parser.add_argument("--json", action="store_true", help="print the aggregate results as JSON")
        parser.add_argument("--quiet", action="store_true", help="no progress bar while the run goes on")

    def handle(self, *args, **options):
        owner, _ = get_user_model().objects.get_or_create(username=options["user"])
        if not owner.has_usable_password() and owner.password == "":
            owner.set_unusable_password()
            owner.save(update_fields=["password"])
        model = (ClassifierModel.objects.filter(owner__isnull=True, builtin_key=options["model"]).first()
                 or ClassifierModel.objects.filter(owner=owner, name=options["model"]).first())
        if model is None:
            raise CommandError(f"no model {options['model']!r}: give a built-in key (run `manage.py sync_models` first) "
                               f"or the name of a model uploaded by {owner.username}")
        paths = {}
        for item in options["path"]:
            field, sep, value = item.partition("=")
            if not sep:
                raise CommandError(f"--path takes FIELD=PATH, not {item!r}")
            paths[field] = value
        subset = {"mode": "all"}
        if options["first"] and options["random"]:
            raise CommandError("give --first or --random, not both")
        if options["first"]:
            subset = {"mode": "first", "n": options["first"]}
        elif options["random"]:
            subset = {"mode": "random", "n": options["random"], "seed": options["subset_seed"]}
        methods = []
        for item in options["methods"]:
            key, plus, flag = item.partition("+")
            if plus and flag != "enhance":
                raise CommandError(f"{item!r}: the only suffix is +enhance")
            methods.append({"key": key, "enhance": bool(plus)})
        name = options["name"] or f"{options['model']} on {options['dataset']}: {' '.join(options['protocols'])}"
        try:
            experiment = services.experiment_create(
                owner=owner, name=name, model=model,
                dataset={"kind": options["dataset"], "paths": paths, "subset": subset},
                methods=methods, protocols=options["protocols"], seed=options["seed"],
                shard_size=options["shard_size"], submit=options["queue"],
            )
        except ValueError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(f"run #{experiment.pk}: {experiment.num_images} images × {len(experiment.methods)} methods, "
                          f"estimated {experiment.estimated_seconds:.0f} s")
        if options["queue"]:
            self.stdout.write(f"queued on the workers ({experiment.shards.count()} shards)")
            return
        experiment = (services.experiment_run_sync(experiment=experiment) if options["quiet"]
                      else self._run_with_progress(experiment))
        if options["json"]:
            self.stdout.write(json.dumps(experiment.results, indent=1))
        else:
            self.stdout.write(selectors.experiment_text_backup(experiment=experiment))
        if experiment.status != experiment.Status.DONE:
            raise CommandError(f"the run ended {experiment.status}: {experiment.error}")

    def _run_with_progress(self, experiment):
        """The synchronous run under a tqdm bar of (image, method) units with the ETA.

        The bar starts at the units already stored (what a resumed run skips).
        """
        from tqdm import tqdm

        from experiments.services.evaluation import units_observed

        total = experiment.num_images * len(experiment.methods)
        done = Record.objects.filter(experiment=experiment).values("image_index", "method_slot").distinct().count()
        with tqdm(total=total, initial=done, unit="unit", desc=f"run #{experiment.pk}", file=self.stderr._out,
                  dynamic_ncols=True) as bar, units_observed(lambda index, method: bar.update(1)):
            return services.experiment_run_sync(experiment=experiment)
