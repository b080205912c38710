"""Pages under /experiments/ and the API under /api/experiments/."""
from django.urls import include, path
from rest_framework.routers import SimpleRouter

from . import views

app_name = "experiments"

router = SimpleRouter()
router.register("experiments", views.ExperimentViewSet, basename="experiment")
router.register("presets", views.PresetViewSet, basename="preset")

urlpatterns = [
    path("experiments/", views.experiments_page, name="experiments"),
    path("experiments/compare/", views.compare_page, name="compare"),
    path("experiments/presets/", views.presets_page, name="presets"),
    path("experiments/<int:pk>/", views.experiment_page, name="page-detail"),
    path("api/", include(router.urls)),
]
