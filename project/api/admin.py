"""The reference project's admin shows what certauth needs: DRF's token admin is hidden.  ``rest_framework.authtoken``
stays installed only for the benchmark's token baseline (bench/inprocess.py); no API of this project takes a
token, so the admin has nothing to manage there."""

from django.contrib import admin
from rest_framework.authtoken.models import TokenProxy

if admin.site.is_registered(TokenProxy):
    admin.site.unregister(TokenProxy)
