"""Signals for integrators (the counterparts of ASP.NET's OnCertificateValidated / OnAuthenticationFailed).

``certificate_authenticated(sender, request, auth)``
    A request authenticated.  ``auth`` is the ``certauth.authenticator.CertificateAuth`` also put on
    ``request.auth`` (identity, thumbprint, subject, issuer, serial, SANs, not_after).

``certificate_rejected(sender, request, reason, detail, certificate, identity_name, client_ip)``
    A request was refused.  ``reason`` is a ``certauth.reasons.Reason``; ``certificate`` is the
    presented ``CertificateInfo`` or None when none could be read; ``identity_name`` is set when an
    identity was matched (revoked entry, disabled identity, missing scope).

Receivers must be quick and must not raise: an exception in a receiver is logged, never turned into
a 500 or an accepted request.
"""

from django.dispatch import Signal

certificate_authenticated = Signal()
certificate_rejected = Signal()
