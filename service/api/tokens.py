"""Bearer tokens: the ``sub`` of a verified JWT from the ``authorization`` metadata.

PyJWT verifies the signature and the claims; this module only decides what
is accepted: RS256 or ES256 only (never ``none`` or an HMAC), a key id the
key set knows whose algorithm is the token's, ``exp``, ``iss`` and ``aud``
present and right, and a non-empty ``sub``. Every refusal is a
CallerUnauthenticated that says briefly why, as RFC 6750 error descriptions do.
"""

from __future__ import annotations

import jwt

from service.api.jwks import ALGORITHMS, KeySet
from service.domain.caller_errors import CallerUnauthenticated

__all__ = ["BearerTokens"]

# Clock skew tolerated between this server and the token issuer.
_LEEWAY_SECONDS = 30


class BearerTokens:
    def __init__(self, keys: KeySet, *, issuer: str, audience: str) -> None:
        self.keys = keys
        self._issuer = issuer
        self._audience = audience

    def subject(self, token: str) -> str:
        """The verified ``sub`` of ``token``; CallerUnauthenticated if anything is off."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise CallerUnauthenticated("The bearer token is not a JWT.") from None
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            raise CallerUnauthenticated("The bearer token must be signed with RS256 or ES256.")
        kid = header.get("kid")
        key = self.keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            if isinstance(kid, str):
                self.keys.missing(kid)
            raise CallerUnauthenticated("The bearer token's signing key (kid) is not known.")
        if key.algorithm_name != algorithm:
            raise CallerUnauthenticated("The bearer token's algorithm does not match its key.")
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=_LEEWAY_SECONDS,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise CallerUnauthenticated("The bearer token has expired.") from None
        except jwt.InvalidAudienceError:
            raise CallerUnauthenticated("The bearer token is not meant for this service.") from None
        except jwt.InvalidIssuerError:
            raise CallerUnauthenticated("The bearer token is from another issuer.") from None
        except jwt.MissingRequiredClaimError as error:
            raise CallerUnauthenticated(f"The bearer token has no {error.claim} claim.") from None
        except jwt.PyJWTError:
            raise CallerUnauthenticated("The bearer token does not verify.") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise CallerUnauthenticated("The bearer token has an empty sub claim.")
        return subject
