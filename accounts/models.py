"""An account: the Django user plus the numeric account number people may log in with."""
from __future__ import annotations

from django.conf import settings
from django.db import models

#: Account numbers are random 9-digit numbers: they say nothing about how many users exist.
ACCOUNT_NUMBER_MIN = 100_000_000
ACCOUNT_NUMBER_MAX = 999_999_999


class Account(models.Model):
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="account")
    number = models.PositiveBigIntegerField(unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(number__gte=ACCOUNT_NUMBER_MIN) & models.Q(number__lte=ACCOUNT_NUMBER_MAX),
                name="account_number_nine_digits",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user.get_username()} (#{self.number})"
