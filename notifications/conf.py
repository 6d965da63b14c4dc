"""The notifications app's settings, each with its default, type and meaning (issue 13).

Read them as ``app_settings.NAME``: each is a ``Setting`` (declared once: its default, which
gives its type, and its meaning) that reads the Django setting ``RUNBOARD_<NAME>`` when accessed
(so ``override_settings`` works), or falls back to the default, so the app runs in a project whose
settings define none of them. Runboard's own settings set one only when the environment variable
of the same name is set (``settings_from_environment``). docs/settings.md lists them all.
"""

from __future__ import annotations

from dashboard.conf import Setting


class NotificationsSettings:
    """``RUNBOARD_*`` settings read by notifications/ (and by apps above it: jobs/, dashboard/, frontend/)."""

    # --- Realtime sockets ------------------------------------------------------------------------
    SOCKET_HEARTBEAT = Setting(
        25.0, "Seconds between the server's ``heartbeat`` frames on a socket (and its liveness write)."
    )

    LAYER_CHECK_INTERVAL = Setting(
        5.0, "Seconds between a web process's end-to-end channel layer checks (failure: sockets close, 4503)."
    )

    # --- Browser push (Web Push with VAPID, RFC 8292) --------------------------------------------
    VAPID_PUBLIC_KEY = Setting(
        "", "VAPID public key (base64url); empty: use var/vapid.json from ``manage.py generate_vapid_keys``."
    )

    VAPID_PRIVATE_KEY = Setting(
        "", "VAPID private key (base64url or PEM); empty: var/vapid.json (``manage.py generate_vapid_keys``)."
    )

    VAPID_SUBJECT = Setting(
        "mailto:admin@localhost",
        "Contact (``mailto:`` or ``https:`` URL) sent to push services in the VAPID claims.",
    )

    WEBPUSH_ALLOW_INSECURE_LOCAL = Setting(
        False, "Accept and send to http://127.0.0.1, [::1] and localhost push endpoints (local tests only)."
    )


app_settings = NotificationsSettings()
