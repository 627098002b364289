"""URL wiring: admin, API, schema/docs, health probes and metrics."""

from django.conf import settings
from django.contrib import admin
from django.http import HttpResponse
from django.urls import include, path, register_converter
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.permissions import AllowAny

from apps.core import health
from apps.core.converters import IdConverter
from apps.core.metrics_view import metrics

register_converter(IdConverter, "id")


class SwaggerView(SpectacularSwaggerView):
    """Swagger UI; OPTIONS answers its Allow header (DRF's metadata answer has no HTML template: a 500)."""

    def options(self, request, *args, **kwargs):
        return HttpResponse(status=200, headers={"Allow": ", ".join(self.allowed_methods)})


api_patterns = [
    path("orders/", include("apps.orders.urls")),
    path("products/", include("apps.orders.product_urls")),
    path("outbox/", include("apps.outbox.urls")),
    path("flags/", include("apps.flags.urls")),
    path("schedules/", include("apps.schedules.urls")),
    path("sagas/", include("apps.sagas.urls")),
    path("webhooks/", include("apps.notifications.urls")),
    path("schema/", SpectacularAPIView.as_view(permission_classes=[AllowAny]), name="schema"),
    path("docs/", SwaggerView.as_view(url_name="schema", permission_classes=[AllowAny]), name="docs"),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include(api_patterns)),
    path("health/", health.health, name="health"),
    path("health/ready", health.ready, name="health-ready"),
    path("health/live", health.live, name="health-live"),
    path("metrics", metrics, name="metrics"),
]

if settings.PAYMENTS_SANDBOX:
    # The sandbox payment provider the checkout saga charges while PAYMENTS_URL is unset; production
    # settings require PAYMENTS_URL, so it is never served there.
    urlpatterns.append(path("sandbox/payments/", include("apps.orders.sandbox_urls")))
