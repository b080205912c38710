"""The accounts API: register, obtain a token (username or account number), the current account."""
from __future__ import annotations

from django.contrib.auth import authenticate, update_session_auth_hash
from django.core.exceptions import ValidationError
from drf_spectacular.utils import extend_schema
from rest_framework import permissions, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from . import services
from .selectors import account_for, username_for_login


class AccountSerializer(serializers.Serializer):
    username = serializers.CharField(read_only=True)
    account_number = serializers.IntegerField(read_only=True)


def _account_data(user) -> dict:
    account = account_for(user)
    return {"username": user.get_username(), "account_number": account.number if account else None}


class RegisterSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(write_only=True, style={"input_type": "password"})


class TokenRequestSerializer(serializers.Serializer):
    login = serializers.CharField(help_text="username or account number")
    password = serializers.CharField(write_only=True, style={"input_type": "password"})


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField()


class PasswordChangeSerializer(serializers.Serializer):
    old_password = serializers.CharField(write_only=True)
    new_password = serializers.CharField(write_only=True)


def _validation_error(error: ValidationError) -> serializers.ValidationError:
    return serializers.ValidationError({"detail": error.messages})


class RegisterView(APIView):
    permission_classes = [permissions.AllowAny]
    authentication_classes: list = []

    @extend_schema(request=RegisterSerializer, responses={201: AccountSerializer})
    def post(self, request):
        data = RegisterSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            account = services.account_register(**data.validated_data)
        except ValidationError as error:
            raise _validation_error(error) from None
        return Response(_account_data(account.user), status=status.HTTP_201_CREATED)


class TokenView(APIView):
    """Exchange a username (or account number) and password for the personal API token."""

    permission_classes = [permissions.AllowAny]
    authentication_classes: list = []

    @extend_schema(request=TokenRequestSerializer, responses={200: TokenSerializer})
    def post(self, request):
        data = TokenRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        # The Django request, not DRF's wrapper: the login throttle marks a locked-out attempt on it,
        # and its middleware turns that mark into the 429 answer.
        user = authenticate(request._request, username=username_for_login(data.validated_data["login"]),
                            password=data.validated_data["password"])
        if user is None:
            raise serializers.ValidationError({"detail": "Unknown username/account number or wrong password."})
        # (a refused login that reached the throttle's limit is answered 429 by its middleware)
        return Response({"token": services.account_token_get(user=user).key})


class MeView(APIView):
    @extend_schema(responses={200: AccountSerializer})
    def get(self, request):
        return Response(_account_data(request.user))


class PasswordView(APIView):
    """Change the password. The API token is replaced (the answer carries the new one) and the
    user's other sessions end; a session making this call stays logged in."""

    @extend_schema(request=PasswordChangeSerializer, responses={200: TokenSerializer})
    def post(self, request):
        data = PasswordChangeSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            token = services.account_change_password(user=request.user, **data.validated_data)
        except ValidationError as error:
            raise _validation_error(error) from None
        update_session_auth_hash(request._request, request.user)
        return Response({"token": token.key})


class TokenRegenerateView(APIView):
    @extend_schema(request=None, responses={201: TokenSerializer})
    def post(self, request):
        token = services.account_token_regenerate(user=request.user)
        return Response({"token": token.key}, status=status.HTTP_201_CREATED)
