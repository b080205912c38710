"""Account pages: register, log in (username or account number), log out, account settings."""
from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login, update_session_auth_hash
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST
from rest_framework.authtoken.models import Token

from . import services
from .forms import LoginForm, PasswordChangeForm, RegisterForm
from .selectors import account_for


def _form_errors(form, error: ValidationError, field: str | None = None) -> None:
    for message in error.messages:
        form.add_error(field, message)


@require_http_methods(["GET", "POST"])
def register(request):
    form = RegisterForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            services.username_validate(form.cleaned_data["username"])
        except ValidationError as error:
            _form_errors(form, error, "username")
        else:
            try:
                account = services.account_register(username=form.cleaned_data["username"],
                                                     password=form.cleaned_data["password1"])
            except ValidationError as error:
                _form_errors(form, error, "password1")
            else:
                login(request, account.user, backend="django.contrib.auth.backends.ModelBackend")
                request.session["new_account_number"] = account.number
                return redirect("accounts:welcome")
    return render(request, "accounts/register.html", {"form": form})


@login_required
def welcome(request):
    number = request.session.pop("new_account_number", None)
    account = account_for(request.user)
    return render(request, "accounts/welcome.html", {"account": account, "just_registered": number is not None})


def login_locked_out(request, original_response=None, credentials=None):
    """The answer to a login refused by the throttle (django-axes): 429 with the cool-off, as
    JSON for the API and as the login page with the message for a browser."""
    minutes = max(1, round(settings.AXES_COOLOFF_TIME.total_seconds() / 60))
    message = (f"Too many failed logins for this account or from this address; "
               f"try again in {minutes} minute{'s' if minutes != 1 else ''}.")
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": message}, status=429, headers={"Retry-After": str(minutes * 60)})
    form = LoginForm(request, data=request.POST or None)
    form.errors.clear()
    form.add_error(None, message)
    response = render(request, "accounts/login.html", {"form": form}, status=429)
    response["Retry-After"] = str(minutes * 60)
    return response


class LoginView(auth_views.LoginView):
    template_name = "accounts/login.html"
    authentication_form = LoginForm
    redirect_authenticated_user = True


@login_required
@require_http_methods(["GET", "POST"])
def account(request):
    form = PasswordChangeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            services.account_change_password(user=request.user, old_password=form.cleaned_data["old_password"],
                                             new_password=form.cleaned_data["new_password1"])
        except ValidationError as error:
            field = "old_password" if "current password" in " ".join(error.messages) else "new_password1"
            _form_errors(form, error, field)
        else:
            update_session_auth_hash(request, request.user)  # stay logged in after the change
            messages.success(request, "Your password was changed.")
            return redirect("accounts:account")
    token = Token.objects.filter(user=request.user).first()
    return render(request, "accounts/account.html",
                  {"form": form, "account": account_for(request.user), "token": token})


@login_required
@require_POST
def token_regenerate(request):
    services.account_token_regenerate(user=request.user)
    messages.success(request, "A new API token was created; the previous one no longer works.")
    return redirect("accounts:account")
