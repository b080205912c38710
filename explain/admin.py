from django.contrib import admin

from .models import ClassifierModel, ExplanationSet, InputImage, Job, MethodSetting


@admin.register(ClassifierModel)
class ClassifierModelAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "architecture", "family", "num_classes", "weights_present")
    list_filter = ("family", "weights_present")
    search_fields = ("name", "architecture")
    exclude = ("class_names", "layers")


@admin.register(MethodSetting)
class MethodSettingAdmin(admin.ModelAdmin):
    list_display = ("owner", "model", "method_key", "updated_at")


@admin.register(InputImage)
class InputImageAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "width", "height", "created_at")


@admin.register(ExplanationSet)
class ExplanationSetAdmin(admin.ModelAdmin):
    list_display = ("id", "owner", "model", "image", "created_at")


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ("id", "kind", "method_key", "status", "progress", "seconds", "created_at")
    list_filter = ("kind", "status")
