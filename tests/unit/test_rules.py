"""Normalisation and validation rules of service.domain.rules."""

from __future__ import annotations

import sys
import unicodedata

import pytest

from service.domain.errors import InvalidArgument
from service.domain.rules import (
    Violations,
    check_display_name,
    check_email,
    check_id,
    check_password,
    check_username,
    email_key,
    fold_case,
    identity_key,
    normalise_password,
)
from tests.helpers import email_of_length, fullwidth


def violated_fields(error: pytest.ExceptionInfo[InvalidArgument]) -> list[str]:
    return [v.field for v in error.value.violations]


# --- identity keys -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("Alice", "alice"),
        (fullwidth("Alice"), "alice"),
        ("ᴮᴵᴳᴮᴵᴿᴰ", "bigbird"),
        ("ǅemal", "džemal"),
        ("Ǆ", "dž"),
        ("Straße", "strasse"),
        ("ﬁle", "file"),
        ("Ⅻ", "xii"),
    ],
    ids=["ascii", "fullwidth", "modifier-letters", "titlecase-digraph", "capital-digraph",
         "sharp-s", "ligature", "roman-numeral"],
)  # fmt: skip
def test_identity_key_is_nfkc_and_casefolded(text, key):
    assert identity_key(text) == key
    assert fold_case(text) == key


def test_fold_case_folds_case_and_final_sigma_and_nothing_else():
    assert fold_case("ΣΊΣΥΦΟΣ") == "σίσυφοσ"
    assert fold_case("Adm\u0131n") == "adm\u0131n"


@pytest.mark.parametrize(
    ("spoof", "name"),
    [("\u0430dmin", "admin"), ("\u0430\u0501m\u0456n", "admin"), ("\u0391DMIN", "admin"),
     ("adm\u0131n", "admin"), ("ADM\u0131N", "admin"), ("\u0130nfo", "info"),
     ("\u0130NFO", "info"), ("i\u0307nfo", "info"), ("\u0251lice", "alice"),
     ("\u0440\u0430\u0443\u0440\u0430l", "paypal"), ("\u0455\u0443\u0455", "sys"),
     ("\u043e\u0440\u0435r\u0430tor", "operator"), ("r\u03bf\u03bft", "root"),
     ("\u0451", "\u00eb"), ("\u0456\u0308", "\u00ef")],
    ids=["cyrillic-a", "cyrillic-a-d-i", "greek-capital-alpha", "dotless-i", "dotless-i-upper",
         "capital-dotted-i", "capital-dotted-i-upper", "i-dot-above", "latin-alpha",
         "whole-cyrillic", "whole-cyrillic-dze", "mostly-cyrillic", "greek-omicron",
         "accented-cyrillic", "cyrillic-i-diaeresis"],
)  # fmt: skip
def test_look_alikes_of_ascii_letters_share_the_ascii_key(spoof, name):
    assert spoof != name
    assert identity_key(spoof) == identity_key(name)


def test_ascii_never_folds_into_other_ascii():
    # "rn"/"m", "l"/"1"/"I", "0"/"o" look alike in some fonts; keys keep them apart.
    keys = [identity_key(n) for n in ["corn", "com", "bill", "bi11", "biII", "b0b", "bob"]]
    assert len(set(keys)) == len(keys)


def test_an_i_with_another_mark_above_keeps_its_dot_above():
    # Only a dot that merges with the i's own dot is dropped.
    assert identity_key("i\u0301\u0307") != identity_key("i\u0301")
    assert identity_key("i\u0323\u0307") == identity_key("i\u0323")


@pytest.mark.parametrize(
    ("a", "b"),
    [("ᴮᴵᴳᴮᴵᴿᴰ", "bigbird"), ("ǅ", "dž"), ("ǅ", "Ǆ"), ("Ǆ", "dž"), ("straße", "strasse"),
     ("STRASSE", "straße"), ("\u1e9e", "ss"), ("\u1e9e", "\u00df"), ("e\u0301", "\u00e9"),
     ("\u212b", "\u00c5"), (fullwidth("BigBird"), "bigbird")],
    ids=["modifier-letters", "titlecase-digraph", "digraph-cases", "capital-digraph",
         "sharp-s", "sharp-s-upper", "capital-sharp-s", "capital-and-small-sharp-s",
         "combining-accent", "angstrom-sign", "fullwidth"],
)  # fmt: skip
def test_equivalent_spellings_share_one_key(a, b):
    assert a != b
    assert identity_key(a) == identity_key(b)


@pytest.mark.parametrize(("a", "b"), [("alice", "alicia"), ("a.b", "a_b"), ("ö", "o")])
def test_different_names_keep_different_keys(a, b):
    assert identity_key(a) != identity_key(b)


def test_identity_key_is_idempotent_for_every_code_point():
    not_stable = []
    for code_point in range(sys.maxunicode + 1):
        if 0xD800 <= code_point <= 0xDFFF:
            continue
        key = identity_key(chr(code_point))
        if identity_key(key) != key:
            not_stable.append(f"U+{code_point:04X}")
    assert not_stable == []


@pytest.mark.parametrize(
    "text",
    ["Straße", "ǅemal", "ᴮᴵᴳᴮᴵᴿᴰ", "Ὀδυσσεύς", "İstanbul", "ﬃ", "\u0430dm\u0131n", "ΣΊΣΥΦΟΣ",
     "Ёлка", "i\u0307\u0307", "\u0130\u0307", "\u0131\u0307\u0308"],
)  # fmt: skip
def test_identity_key_of_a_key_is_the_key(text):
    key = identity_key(text)
    assert identity_key(key) == key
    assert unicodedata.is_normalized("NFKC", key)


def test_identity_key_is_idempotent_for_every_code_point_after_an_i():
    # Marks and look-alikes interact with the letter before them (composition, dots on i).
    not_stable = []
    for code_point in range(0x250, 0x2000):
        text = "\u0131" + chr(code_point)
        key = identity_key(text)
        if identity_key(key) != key or not unicodedata.is_normalized("NFKC", key):
            not_stable.append(f"U+{code_point:04X}")
    assert not_stable == []


def test_email_key_ignores_case_of_local_part_and_domain():
    assert email_key("Alice.Smith@Example.COM") == email_key("alice.smith@example.com")


def test_email_key_folds_case_but_not_look_alikes():
    # A local part names a mailbox: "adm\u0131n@" may be someone else's address.
    assert email_key("ADMIN@example.com") == "admin@example.com"
    assert email_key("adm\u0131n@example.com") != email_key("admin@example.com")


# --- usernames ---------------------------------------------------------------------


def test_checked_username_keeps_case_for_display_and_carries_its_key():
    name = check_username("MixedCase")
    assert name == "MixedCase"
    assert name.key == "mixedcase"


def test_checked_username_is_the_nfkc_form():
    name = check_username(fullwidth("Wide"))
    assert name == "Wide"
    assert name.key == "wide"


@pytest.mark.parametrize(
    "raw",
    ["abc", "a" * 32, "9lives", "a.b", "a_b", "a-b", "abc.", "Ωμέγα", "名前です", "١٢٣",
     "ﬀ" * 16, fullwidth("abc")],
    ids=["3", "32", "leading-digit", "dot", "underscore", "dash", "trailing-dot", "greek",
         "japanese", "arabic-digits", "32-after-nfkc", "fullwidth"],
)  # fmt: skip
def test_valid_usernames_pass(raw):
    assert check_username(raw).key == identity_key(raw)


@pytest.mark.parametrize(
    "raw",
    ["", "ab", "a" * 33, "ﬀ" * 17, "㍿" * 9, "_ab", ".ab", "-ab", "a@b", "@ab", "a b", "a+b",
     "a/b", "a\tb", "a\u200bb", "ab😀", "a\u0301b" + "\u0301" * 2, "ab'c"],
    ids=["empty", "2", "33", "34-after-nfkc", "36-after-nfkc", "leading-underscore",
         "leading-dot", "leading-dash", "at", "leading-at", "space", "plus", "slash", "tab",
         "zero-width-space", "emoji", "stray-combining-marks", "apostrophe"],
)  # fmt: skip
def test_invalid_usernames_are_invalid_argument_naming_the_field(raw):
    with pytest.raises(InvalidArgument) as error:
        check_username(raw)
    assert violated_fields(error) == ["username"]
    assert error.value.violations[0].description


def test_username_length_is_counted_after_nfkc():
    assert len("ﬀ" * 16) == 16
    assert check_username("ﬀ" * 16) == "f" * 32
    with pytest.raises(InvalidArgument):
        check_username("ﬀ" * 17)  # 17 characters typed, 34 after NFKC


def test_username_violation_uses_the_given_field_name():
    with pytest.raises(InvalidArgument) as error:
        check_username("x", "user.username")
    assert violated_fields(error) == ["user.username"]


# --- e-mail addresses --------------------------------------------------------------


def test_checked_email_lowercases_the_domain_and_carries_a_casefolded_key():
    address = check_email("Alice.Smith@Example.COM")
    assert address == "Alice.Smith@example.com"
    assert address.key == "alice.smith@example.com"


@pytest.mark.parametrize(
    "raw",
    ["a@example.com", "first.last+tag@sub.example.co.uk", "o'brien@example.ie",
     "用户@例子.广告", email_of_length(254)],
    ids=["plain", "plus-tag", "apostrophe", "internationalised", "254-chars"],
)  # fmt: skip
def test_valid_emails_pass(raw):
    assert check_email(raw)


@pytest.mark.parametrize(
    "raw",
    ["", "plain", "@example.com", "a@", "a@@example.com", "a b@example.com", "a@example",
     "Alice <a@example.com>", "a@example..com", ".a@example.com", email_of_length(255)],
    ids=["empty", "no-at", "no-local", "no-domain", "two-ats", "space", "no-dot-in-domain",
         "display-name-form", "double-dot", "leading-dot", "255-chars"],
)  # fmt: skip
def test_invalid_emails_are_invalid_argument_naming_the_field(raw):
    with pytest.raises(InvalidArgument) as error:
        check_email(raw, "user.email")
    assert violated_fields(error) == ["user.email"]


def test_invalid_email_message_does_not_echo_the_input():
    with pytest.raises(InvalidArgument) as error:
        check_email("<script>@x")
    assert "<script>" not in error.value.message


def test_email_is_not_looked_up_in_dns():
    # A domain that cannot resolve is still syntactically fine.
    assert check_email("someone@no-such-domain.invalid-tld-for-tests")


# --- passwords ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    ["12345678", "p" * 256, "ﬀ" * 4, "        ", "密码密码密码密码", "🔑" * 8],
    ids=["8", "256", "8-after-nfkc", "spaces", "cjk", "emoji"],
)
def test_valid_passwords_pass_without_composition_rules(raw):
    assert check_password(raw) == unicodedata.normalize("NFKC", raw)


@pytest.mark.parametrize(
    "raw",
    ["", "1234567", "p" * 257, "ﬀ" * 129],
    ids=["empty", "7", "257", "258-after-nfkc"],
)
def test_invalid_password_lengths_are_invalid_argument(raw):
    with pytest.raises(InvalidArgument) as error:
        check_password(raw, "new_password")
    assert violated_fields(error) == ["new_password"]


def test_password_is_nfkc_normalised_for_hashing():
    assert check_password(fullwidth("Secret123")) == "Secret123"
    assert normalise_password(fullwidth("Secret123")) == "Secret123"


def test_presented_password_is_normalised_without_rules():
    assert normalise_password("") == ""
    assert normalise_password("x" * 1000) == "x" * 1000


def test_invalid_password_message_does_not_echo_it():
    with pytest.raises(InvalidArgument) as error:
        check_password("hunter2")
    assert "hunter2" not in error.value.message


# --- display names -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "shown"),
    [("", ""), ("Alice Liddell", "Alice Liddell"), ("  padded  ", "padded"),
     ("e\u0301", "é"), ("x" * 128, "x" * 128), ("Zoë 🐈", "Zoë 🐈")],
    ids=["empty", "plain", "padded", "nfc", "128", "emoji"],
)  # fmt: skip
def test_valid_display_names_are_trimmed_and_nfc(raw, shown):
    assert check_display_name(raw) == shown


@pytest.mark.parametrize(
    "raw",
    ["a\x00b", "a\x07b", "a\tb", "a\nb", "a\rb", "a\x1b[2Jb", "a\x7fb", "a\x85b", "a\x9fb",
     "a\u2028b", "a\u2029b", "x" * 129],
    ids=["nul", "bell", "tab", "newline", "return", "escape", "del", "c1-nel", "c1-last",
         "line-separator", "paragraph-separator", "129"],
)  # fmt: skip
def test_invalid_display_names_are_invalid_argument(raw):
    with pytest.raises(InvalidArgument) as error:
        check_display_name(raw)
    assert violated_fields(error) == ["display_name"]


# --- ids and collected violations --------------------------------------------------


@pytest.mark.parametrize("value", [1, 2**63 - 1])
def test_positive_ids_pass(value):
    assert check_id(value) == value


@pytest.mark.parametrize("value", [0, -1, -(2**63)])
def test_non_positive_ids_are_invalid_argument(value):
    with pytest.raises(InvalidArgument) as error:
        check_id(value, "user.id")
    assert violated_fields(error) == ["user.id"]


def test_violations_collect_every_failed_check_in_order():
    found = Violations()
    name = found.check(check_username, "x")
    address = found.check(check_email, "a@example.com")
    found.check(check_password, "short")
    with pytest.raises(InvalidArgument) as error:
        found.raise_if_any()
    assert violated_fields(error) == ["username", "password"]
    assert name is None
    assert address == "a@example.com"
    assert "username" in error.value.message
    assert "password" in error.value.message


def test_violations_without_failures_do_not_raise():
    found = Violations()
    assert found.check(check_id, 5) == 5
    found.raise_if_any()


def test_invalid_argument_needs_a_violation():
    with pytest.raises(ValueError, match="violation"):
        InvalidArgument([])
