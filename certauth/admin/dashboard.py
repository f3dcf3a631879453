"""The dashboard on the admin index and certauth's app index: four numbers an operator checks first, each a
link to the list that shows exactly what it counts, each shown only to whom may view that list."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.translation import gettext as _

from .. import audit
from ..authorities import stale_crls
from ..conf import settings
from ..models import RegisteredCertificate

#: The "refused" tile's window, and the audit list's "seen" filter value that shows the same rows.
REFUSED_HOURS, REFUSED_SEEN = 1, "1h"


@dataclass(frozen=True)
class Tile:
    key: str
    label: str
    count: int
    url: str
    attention: bool  # a non-zero count here asks for action


def _may_view(user: Any, model: str, current_app: str | None) -> bool:
    """Whether ``user`` may view the model's list, and the admin site serving this page has that list."""
    if not (user.has_perm(f"certauth.view_{model}") or user.has_perm(f"certauth.change_{model}")):
        return False
    try:
        reverse(f"admin:certauth_{model}_changelist", current_app=current_app)
    except NoReverseMatch:  # a site of the project's own without certauth's admin: no tile, never a 500
        return False
    return True


def dashboard_tiles(user: Any, now: dt.datetime | None = None, current_app: str | None = None) -> list[Tile]:
    """The tiles ``user`` may see, counted at ``now``, linked into the admin site ``current_app``."""
    now = now or timezone.now()
    tiles = []

    def changelist(model: str) -> str:
        return reverse(f"admin:certauth_{model}_changelist", current_app=current_app)

    if _may_view(user, "registeredcertificate", current_app):
        entries = changelist("registeredcertificate")
        days = settings.EXPIRY_WARNING_DAYS
        expiring = RegisteredCertificate.objects.with_status("expiring", now).count()
        never_used = RegisteredCertificate.objects.filter(last_used_at__isnull=True).count()
        tiles += [
            Tile(
                "expiring",
                _("Certificates expiring within %(days)d days") % {"days": days},
                expiring,
                f"{entries}?status=expiring",
                bool(expiring),
            ),
            Tile("never_used", _("Certificates never used"), never_used, f"{entries}?status=never_used", False),
        ]
    if _may_view(user, "authenticationfailure", current_app):
        refused = audit.refusals_since(now - dt.timedelta(hours=REFUSED_HOURS))
        url = changelist("authenticationfailure") + f"?seen={REFUSED_SEEN}"
        tiles.append(Tile("refused", _("Refusals in the last hour"), refused, url, bool(refused)))
    if _may_view(user, "trustedauthority", current_app):
        stale = stale_crls(now).count()
        url = changelist("trustedauthority") + "?crl=stale"
        tiles.append(Tile("stale_crls", _("CRLs stale (past nextUpdate or not refreshed)"), stale, url, bool(stale)))
    return tiles
