from django.contrib import admin
from django.http import HttpResponsePermanentRedirect
from django.templatetags.static import static
from django.urls import include, path
from csp.decorators import csp_update
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from .health import healthz

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    # Browsers ask for /favicon.ico whatever the page links: answer with the site's icon.
    path("favicon.ico", lambda request: HttpResponsePermanentRedirect(static("frontend/favicon.svg"))),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # Swagger UI's page starts itself with an inline script and style: only this page may run them.
    path("api/docs/", csp_update({"script-src": ["'unsafe-inline'"], "style-src": ["'unsafe-inline'"]})(
        SpectacularSwaggerView.as_view(url_name="api-schema")), name="api-docs"),
    path("", include("accounts.urls")),
    path("", include("explain.urls")),
    path("", include("experiments.urls")),
    path("", include("frontend.urls")),
]
