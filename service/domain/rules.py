"""Validation and normalisation of user input.

Each ``check_*`` function returns the normalised value or raises
``InvalidArgument`` naming the field. Identity keys (``*_key``) are what
uniqueness is enforced on in the database; display forms keep the case the
user chose.

Username keys, and how far they go against look-alike names:

1. NFKC_Casefold (NFKC, full case folding, NFKC again): compatibility forms,
   case and digraph cases fold together ("ᴮᴵᴳᴮᴵᴿᴰ", full-width "BigBird" and "bigbird";
   "ǅ", "Ǆ" and "dž"; "ß", "ẞ" and "ss").
2. Look-alikes of ASCII letters become those letters: each non-ASCII letter,
   digit or mark whose only ASCII look-alike in Unicode's confusables data
   (UTS #39) is one letter maps to it (``service.domain.lookalikes``: Cyrillic
   a U+0430 to "a", Greek omicron to "o", Turkish dotless i U+0131 to "i", ...). It applies
   to the canonical decomposition, so that accented look-alikes ("ё") fold
   with their base letter ("ë"), and a dot above an "i" or "j" is dropped: it
   is the dot they already show, and what "İ" folds to ("i" + U+0307). So
   "admin" spelt with a Cyrillic a or a dotless i, or "İnfo", cannot sit beside
   "admin" and "info".

What the keys deliberately do not do: fold ASCII into ASCII ("rn" and "m",
"l", "1" and "I", "0" and "o" stay distinct; folding them would make ordinary
names collide and change the keys of existing ASCII names), fold look-alikes
of non-ASCII letters into each other, or fold multi-character look-alikes.
Mixed-script names are not refused either: step 2 already gives an ASCII
name's Cyrillic, Greek or Armenian double the same key. Display forms are
the NFKC form as typed; only the key folds. E-mail keys are NFKC_Casefold
only: the local part names a mailbox, and "adm\u0131n@" may be another one.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from typing import ParamSpec, TypeVar, cast

from email_validator import EmailNotValidError, validate_email

from service.domain.errors import FieldViolation, InvalidArgument
from service.domain.lookalikes import LOOKALIKES

__all__ = [
    "DISPLAY_NAME_MAX",
    "EMAIL_MAX",
    "PASSWORD_MAX",
    "PASSWORD_MIN",
    "USERNAME_MAX",
    "USERNAME_MIN",
    "CheckedEmail",
    "CheckedUsername",
    "Violations",
    "check_body",
    "check_display_name",
    "check_email",
    "check_id",
    "check_password",
    "check_title",
    "check_username",
    "check_username_prefix",
    "email_key",
    "fold_case",
    "identity_key",
    "normalise_password",
]

USERNAME_MIN, USERNAME_MAX = 3, 32
EMAIL_MAX = 254
PASSWORD_MIN, PASSWORD_MAX = 8, 256
DISPLAY_NAME_MAX = 128
TITLE_MAX = 200
BODY_MAX = 10_000
P = ParamSpec("P")
T = TypeVar("T")
_USERNAME_PUNCTUATION = frozenset("._-")
# Anything a terminal or a log line would interpret rather than show.
# Bidirectional overrides and isolates can make a name read as another one.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


_TO_ASCII = str.maketrans(LOOKALIKES)
_DOT_ABOVE = "\u0307"
# The combining class of marks drawn above the base (U+0307's own class).
_ABOVE = 230


def fold_case(text: str) -> str:
    """NFKC_Casefold-style: compatibility forms and case fold together.

    NFKC runs again after casefolding because folding can produce characters
    that compose differently (Unicode's NFKC_Casefold is stable this way).
    """
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())


def identity_key(text: str) -> str:
    """The key a username is unique by: case, compatibility forms and look-alikes folded.

    See the module docstring for what folds and why. The key of a key is the
    key itself, and every key is in NFKC.
    """
    folded = fold_case(text)
    if folded.isascii():
        return folded
    decomposed = unicodedata.normalize("NFD", folded).translate(_TO_ASCII)
    return unicodedata.normalize("NFKC", _drop_dots_on_i_and_j(decomposed))


def _drop_dots_on_i_and_j(text: str) -> str:
    """Drop U+0307 when it is the (only) mark above an i or a j: they show a dot already."""
    if _DOT_ABOVE not in text:
        return text
    kept: list[str] = []
    for char in text:
        if char == _DOT_ABOVE and _base_is_i_or_j(kept):
            continue
        kept.append(char)
    return "".join(kept)


def _base_is_i_or_j(before: list[str]) -> bool:
    """Whether the base of a mark appended now is i or j, with no other mark above between."""
    for char in reversed(before):
        combining = unicodedata.combining(char)
        if combining == 0:
            return char in "ij"
        if combining == _ABOVE:
            return False
    return False


class CheckedUsername(str):
    """A valid username in display form (NFKC), with its identity key."""

    key: str

    def __new__(cls, display: str) -> CheckedUsername:
        obj = super().__new__(cls, display)
        obj.key = identity_key(display)
        return obj


class CheckedEmail(str):
    """A valid, normalised e-mail address, with its identity key."""

    key: str

    def __new__(cls, normalised: str) -> CheckedEmail:
        obj = super().__new__(cls, normalised)
        obj.key = email_key(normalised)
        return obj


def check_username(raw: str, field: str = "username") -> CheckedUsername:
    name = unicodedata.normalize("NFKC", raw)
    problem = _username_problem(name)
    if problem:
        raise InvalidArgument.field(field, problem)
    return CheckedUsername(name)


def check_username_prefix(raw: str, field: str = "username_prefix") -> str:
    """A ListUsers filter: free text, but bounded like a username's key and without controls.

    PostgreSQL text cannot hold NUL, and SQLite refuses LIKE patterns over 50,000 bytes.
    """
    if len(identity_key(raw)) > USERNAME_MAX * 3:
        raise InvalidArgument.field(
            field, f"Username prefix must be at most {USERNAME_MAX * 3} characters."
        )
    if _CONTROL.search(raw):
        raise InvalidArgument.field(field, "Username prefix must not contain control characters.")
    return raw


def _username_problem(name: str) -> str | None:
    if not USERNAME_MIN <= len(name) <= USERNAME_MAX:
        return f"Username must be {USERNAME_MIN}-{USERNAME_MAX} characters long."
    if not name[0].isalnum():
        return "Username must start with a letter or a digit."
    if any(not (c.isalnum() or c in _USERNAME_PUNCTUATION) for c in name):
        return "Username may contain only letters, digits, '.', '_' and '-'."
    # Casefolding may lengthen a name (ß -> ss); bound the key as well.
    if len(identity_key(name)) > USERNAME_MAX * 3:
        return "Username is too long once normalised."
    return None


def email_key(email: str) -> str:
    """Unique case-insensitively (NFKC_Casefold); no look-alike folding, see the module doc."""
    return fold_case(email)


def check_email(raw: str, field: str = "email") -> CheckedEmail:
    if not raw:
        raise InvalidArgument.field(field, "Email is required.")
    if len(raw) > EMAIL_MAX:
        raise InvalidArgument.field(field, f"Email must be at most {EMAIL_MAX} characters.")
    try:
        result = validate_email(raw, check_deliverability=False)
    except EmailNotValidError:
        # The library's message can echo the input back; keep ours fixed.
        raise InvalidArgument.field(field, "Email is not a valid address.") from None
    normalised: str = result.normalized
    if len(normalised) > EMAIL_MAX:
        raise InvalidArgument.field(field, f"Email must be at most {EMAIL_MAX} characters.")
    return CheckedEmail(normalised)


def check_password(raw: str, field: str = "password") -> str:
    """NFKC-normalise a new password so that every way of typing it verifies."""
    password = unicodedata.normalize("NFKC", raw)
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise InvalidArgument.field(
            field, f"Password must be {PASSWORD_MIN}-{PASSWORD_MAX} characters long."
        )
    return password


def normalise_password(raw: str) -> str:
    """The form a presented password is verified in; no rules, so any input can fail."""
    return unicodedata.normalize("NFKC", raw)


def check_display_name(raw: str, field: str = "display_name") -> str:
    name = unicodedata.normalize("NFC", raw).strip()
    if len(name) > DISPLAY_NAME_MAX:
        raise InvalidArgument.field(
            field, f"Display name must be at most {DISPLAY_NAME_MAX} characters."
        )
    if _CONTROL.search(name):
        raise InvalidArgument.field(field, "Display name must not contain control characters.")
    return name


def check_title(raw: str, field: str = "title") -> str:
    title = unicodedata.normalize("NFC", raw).strip()
    if not 1 <= len(title) <= TITLE_MAX:
        raise InvalidArgument.field(field, f"Title must be 1-{TITLE_MAX} characters long.")
    if _CONTROL.search(title):
        raise InvalidArgument.field(field, "Title must not contain control characters.")
    if all(unicodedata.category(c) in {"Cf", "Zs", "Zl", "Zp"} for c in title):
        raise InvalidArgument.field(field, "Title must contain a visible character.")
    return title


def check_body(raw: str, field: str = "body") -> str:
    body = unicodedata.normalize("NFC", raw)
    if len(body) > BODY_MAX:
        raise InvalidArgument.field(field, f"Body must be at most {BODY_MAX:,} characters.")
    # Line breaks and tabs are text in a body; other controls are not.
    if _CONTROL.search(body.replace("\n", "").replace("\r", "").replace("\t", "")):
        raise InvalidArgument.field(field, "Body must not contain control characters.")
    return body


def check_id(value: int, field: str = "id") -> int:
    if value <= 0:
        raise InvalidArgument.field(field, "Id must be a positive integer.")
    return value


class Violations:
    """Collects the violations of several checks so that one reply names every bad field."""

    def __init__(self) -> None:
        self._found: list[FieldViolation] = []

    def check(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run one check; on failure record it and return a placeholder of the same type."""
        try:
            return fn(*args, **kwargs)
        except InvalidArgument as error:
            self._found.extend(error.violations)
            return cast("T", None)

    def raise_if_any(self) -> None:
        if self._found:
            raise InvalidArgument(self._found)
