"""The rules for names people read (agents, organizations) and for slugs: plain functions with
no dependency beyond the standard library, so anything (the input boundary, a test's fuzzer)
applies the very same rule."""

import re
import unicodedata

# Scripts that may share one name (Unicode TS #39, "highly restrictive"): Latin with the
# scripts written beside it in Chinese, Japanese and Korean. Anything else stays in one script.
_SCRIPT_SETS_ALLOWED = (
    frozenset({"LATIN", "HAN", "HIRAGANA", "KATAKANA"}),
    frozenset({"LATIN", "HAN", "BOPOMOFO"}),
    frozenset({"LATIN", "HAN", "HANGUL"}),
)
_SCRIPT_ALIASES = {"CJK": "HAN", "IDEOGRAPHIC": "HAN", "KANGXI": "HAN"}
_COMMON_LETTER_WORDS = frozenset({"MODIFIER", "FULLWIDTH", "HALFWIDTH", "KATAKANA-HIRAGANA"})
SLUG = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def _script(character: str) -> str | None:
    """The script of a letter, from its Unicode name (None for everything that is not one)."""
    if not unicodedata.category(character).startswith("L"):
        return None
    word = unicodedata.name(character, "").split(" ", 1)[0]
    if not word or word in _COMMON_LETTER_WORDS:
        return None
    return _SCRIPT_ALIASES.get(word, word)


def name_refusal(value: str) -> str | None:
    """Why ``value`` (already NFKC-normalized) is not an acceptable name, or None.

    Refused: control and invisible format characters (zero-width joiners and spaces,
    bidirectional overrides and isolates, the BOM), unassigned and private-use code points,
    line and paragraph separators, and letters of several scripts (a Cyrillic "а" among Latin
    letters), except Latin mixed with Han, Kana, Bopomofo or Hangul.
    """
    scripts: set[str] = set()
    for character in value:
        category = unicodedata.category(character)
        if category in ("Cc", "Cf", "Cn", "Co", "Cs", "Zl", "Zp"):
            return f"contains the invisible or control character U+{ord(character):04X}"
        script = _script(character)
        if script:
            scripts.add(script)
    if len(scripts) > 1 and not any(scripts <= allowed for allowed in _SCRIPT_SETS_ALLOWED):
        return f"mixes the scripts {', '.join(sorted(scripts))}"
    return None


def name_problem(normalized: str) -> str | None:
    """Why an NFKC-normalized, trimmed name is not acceptable (blank, or
    :func:`name_refusal`), or None."""
    if not normalized:
        return "must not be blank"
    return name_refusal(normalized)


def name_acceptable(value: str) -> bool:
    """Whether ``value`` as sent is a name the API accepts."""
    return name_problem(unicodedata.normalize("NFKC", value).strip()) is None
