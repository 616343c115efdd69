"""URL map: admin, browser login, the API under /api/, /metrics, the landing page."""

from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularJSONAPIView

from accounts.forms import RateLimitedAdminAuthenticationForm
from accounts.views import ObtainTokenView
from sync.http.apiview import SyncAPIView
from sync.http.login_limits import rate_limited_login
from sync.http.pages import index
from sync.http.views import ApiNotFoundView
from sync.ops.metrics_view import MetricsView


class SchemaView(SyncAPIView, SpectacularJSONAPIView):
    """The OpenAPI schema, behind the same auth and rate limit as the API."""


# Password guesses past SYNC_LOGIN_RATE_LIMIT get 429 on the admin login too.
admin.site.login_form = RateLimitedAdminAuthenticationForm

urlpatterns = [
    path("admin/login/", rate_limited_login(admin.site.login)),
    path("admin/", admin.site.urls),
    path("accounts/", include("accounts.urls")),
    path("api/auth/token", ObtainTokenView.as_view(), name="api-token"),
    path("api/sync/", include("sync.urls")),
    path("api/schema/", SchemaView.as_view(), name="api-schema"),
    re_path(r"^api(/.*)?$", ApiNotFoundView.as_view()),
    path("metrics", MetricsView.as_view(), name="metrics"),
    path("", index, name="index"),
]
