"""Who is calling: the verified principal of a call, from its transport or its bearer token.

- mTLS: the SPIFFE ID of the client certificate the TLS handshake verified
  against ``--tls-client-ca``. gRPC's core puts it in the auth context as
  ``peer_spiffe_id`` only when the certificate's one URI SAN is a valid
  SPIFFE ID: a certificate with two URI SANs, or with the name only as its
  CN or a DNS SAN, has no principal.
- JWT: with a key set configured, a call that carries ``authorization:
  Bearer <JWT>`` is the token's verified ``sub``; a token that does not
  verify is refused, never overlooked in favour of the certificate.

Nothing else a client sends counts: other metadata (``x-spiffe-id``,
``x-forwarded-client-cert``, ...) is never read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from service.domain.caller_errors import CallerUnauthenticated

if TYPE_CHECKING:
    from service.api.tokens import BearerTokens

__all__ = ["CallerIdentity"]

_SPIFFE = "spiffe://"


class CallerIdentity:
    def __init__(self, *, certificates: bool, tokens: BearerTokens | None) -> None:
        self.certificates = certificates
        self.tokens = tokens

    def principal(self, context: Any) -> str:
        """The verified principal of the call, or "" if it has none.

        Raises CallerUnauthenticated for a bearer token that does not verify.
        """
        if self.tokens is not None:
            token = _bearer_token(context.invocation_metadata() or ())
            if token is not None:
                return self.tokens.subject(token)
        if self.certificates:
            return _spiffe_id(context.auth_context())
        return ""


def _spiffe_id(auth_context: dict[str, list[bytes]]) -> str:
    ids = auth_context.get("peer_spiffe_id") or ()
    if len(ids) != 1:
        return ""
    spiffe_id = ids[0].decode("utf-8", "replace")
    return spiffe_id if spiffe_id.startswith(_SPIFFE) else ""


def _bearer_token(metadata: Any) -> str | None:
    values = [value for key, value in metadata if key == "authorization"]
    if not values:
        return None
    if len(values) > 1:
        raise CallerUnauthenticated("Send one authorization header, not several.")
    value = values[0]
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    value = str(value)
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise CallerUnauthenticated('The authorization metadata must read "Bearer <JWT>".')
    return token.strip()
