from django.contrib import admin

from .models import Experiment, Record, Shard


@admin.register(Experiment)
class ExperimentAdmin(admin.ModelAdmin):
    list_display = ("id", "name", "owner", "status", "num_images", "created_at", "finished_at")
    list_filter = ("status",)
    search_fields = ("name", "owner__username")
    readonly_fields = ("results", "manifest", "dataset_info")


@admin.register(Shard)
class ShardAdmin(admin.ModelAdmin):
    list_display = ("id", "experiment", "index", "start", "stop", "status", "attempts", "worker", "heartbeat_at")
    list_filter = ("status",)


@admin.register(Record)
class RecordAdmin(admin.ModelAdmin):
    list_display = ("id", "experiment", "image_index", "method_key", "enhance", "protocol", "class_id", "variant", "ok")
    list_filter = ("ok", "protocol")
