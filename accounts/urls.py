from django.contrib.auth import views as auth_views
from django.urls import path

from accounts.forms import RateLimitedAuthenticationForm
from sync.http.login_limits import rate_limited_login

login_view = auth_views.LoginView.as_view(
    authentication_form=RateLimitedAuthenticationForm
)

urlpatterns = [
    path("login/", rate_limited_login(login_view), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
]
