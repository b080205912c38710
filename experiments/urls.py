"""Pages under /experiments/ and the API under /api/experiments/."""
from django.urls import include, path
from rest_framework.routers import SimpleRouter

from . import views

app_name = "experiments"

router = SimpleRouter()
router.register("experiments", views.ExperimentViewSet, basename="experiment")

urlpatterns = [
    path("experiments/", views.experiments_page, name="experiments"),
    path("experiments/compare/", views.compare_page, name="compare"),
    path("experiments/<int:pk>/", views.experiment_page, name="page-detail"),
    path("api/", include(router.urls)),
]
