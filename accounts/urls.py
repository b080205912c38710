from django.contrib.auth import views as auth_views
from django.urls import path

from . import api, views

app_name = "accounts"

urlpatterns = [
    path("register/", views.register, name="register"),
    path("welcome/", views.welcome, name="welcome"),
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("account/", views.account, name="account"),
    path("account/token/", views.token_regenerate, name="token"),
    path("api/auth/register/", api.RegisterView.as_view(), name="api-register"),
    path("api/auth/token/", api.TokenView.as_view(), name="api-token"),
    path("api/account/", api.MeView.as_view(), name="api-me"),
    path("api/account/password/", api.PasswordView.as_view(), name="api-password"),
    path("api/account/token/", api.TokenRegenerateView.as_view(), name="api-token-regenerate"),
]
