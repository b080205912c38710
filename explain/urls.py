from django.urls import include, path
from rest_framework.routers import DefaultRouter

from . import views

app_name = "explain"

router = DefaultRouter()
router.register("models", views.ClassifierModelViewSet, basename="model")
router.register("method-settings", views.MethodSettingViewSet, basename="methodsetting")
router.register("images", views.InputImageViewSet, basename="image")
router.register("explanation-sets", views.ExplanationSetViewSet, basename="explanationset")
router.register("jobs", views.JobViewSet, basename="job")

urlpatterns = [
    path("api/architectures/", views.ArchitectureView.as_view(), name="architectures"),
    path("api/samples/", views.SampleView.as_view(), name="samples"),
    path("api/", include(router.urls)),
]
