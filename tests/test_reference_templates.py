"""The reference project's templates live in the top-level templates/ folder (TEMPLATES DIRS), the app's own
in the package: the admin's branding comes from templates/admin/base_site.html, which the wheel never holds."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.test import Client

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.django_db
def test_the_admin_branding_is_the_reference_projects_template(client: Client) -> None:
    response = client.get("/admin/login/")
    assert response.status_code == 200
    used = {template.origin.name for template in response.templates if template.origin}
    assert str(REPO / "templates" / "admin" / "base_site.html") in used
    content = response.content.decode()
    assert '<div id="site-name"><a href="/admin/">certauth administration</a></div>' in content
    assert "<title>Log in | certauth</title>" in content


def test_the_app_ships_no_project_templates() -> None:
    assert not (REPO / "certauth" / "templates" / "admin" / "base_site.html").exists()
