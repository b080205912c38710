from django.contrib import admin

from .models import Share


@admin.register(Share)
class ShareAdmin(admin.ModelAdmin):
    list_display = ("view", "title", "owner", "created_at", "revoked_at")
    list_filter = ("view",)
