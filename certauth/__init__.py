"""certauth: X.509 client-certificate authentication for Django and DRF behind a TLS-terminating proxy."""

__version__ = "0.1.0"
