from django.urls import include, path
from rest_framework.routers import SimpleRouter

from . import api, views

app_name = "sharing"

router = SimpleRouter()
router.register("shares", api.ShareViewSet, basename="share")

urlpatterns = [
    path("s/<str:token>/", views.public, name="public"),
    path("s/<str:token>/files/<str:name>", views.public_file, name="public-file"),
    path("api/", include(router.urls)),
]
