"""The login throttle as an authentication backend: django-axes' check, for logins that come with a request."""
from __future__ import annotations

from axes.backends import AxesStandaloneBackend


class LoginThrottleBackend(AxesStandaloneBackend):
    """Refuses a locked-out account or address before any password is checked.

    Only requests are throttled: a call without one (``manage.py`` code, the test client's
    ``login``) comes from someone who already has the server, so it is passed on to the next
    backend instead of being refused as django-axes' own backend does.
    """

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)
