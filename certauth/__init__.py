"""certauth: X.509 client-certificate authentication for Django and DRF behind a TLS-terminating proxy.

Distributed as ``django-certauth`` (the name ``certauth`` on PyPI is an unrelated project); the import
package is ``certauth``.  ``__version__`` is the only copy of the version: pyproject.toml reads it."""

__version__ = "0.2.0"
