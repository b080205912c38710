"""The pages, plus the sharing app's routes (the project urls include this module only)."""
from django.urls import include, path

from . import views

pages = [
    path("", views.home, name="home"),
    path("explain/", views.explain_page, name="explain"),
    path("segment/", views.segment_page, name="segment"),
    path("models/", views.models_page, name="models"),
    path("models/<int:pk>/weights/", views.builtin_weights_import, name="builtin-weights"),
    path("models/<int:pk>/fetch-weights/", views.builtin_weights_fetch, name="builtin-weights-fetch"),
    path("models/<int:pk>/rename/", views.model_rename, name="model-rename"),
    path("models/<int:pk>/delete/", views.model_delete, name="model-delete"),
    path("settings/", views.settings_page, name="settings"),
    path("shares/", views.shares_page, name="shares"),
    path("shares/<int:pk>/revoke/", views.share_revoke, name="share-revoke"),
]

urlpatterns = [
    path("", include((pages, "frontend"))),
    path("", include("sharing.urls")),
]
