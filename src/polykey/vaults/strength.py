"""Password strength: zxcvbn's estimate of guesses, in bits, and KeePassXC's bands.

The estimate is zxcvbn's (the ``zxcvbn`` package, 4.5): the same matchers and the same
scoring, so ``bits(pw) == log2(zxcvbn.zxcvbn(pw)["guesses"])`` (a test checks it on a corpus).
Only the dictionary matcher is rewritten: zxcvbn looks every substring of the password up in
each of its six word lists, which costs about 5 ms for a 24-character password (l33t variants
run it again per substitution); here one table holds every word and every prefix of one, so a
substring that begins no word stops the scan at once. It finds exactly the same matches, in
the same order. That keeps `pk health` of 10,000 passwords within seconds.

zxcvbn is imported on first use (it builds its word lists at import: about 80 ms), by the
health check alone.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

MAX_LENGTH = 72
"""zxcvbn's own limit; a longer value is scored on its first MAX_LENGTH characters."""

REUSE_PENALTY = 15
REUSED_CAP = 74
BANDS = (("poor", 40), ("weak", 75), ("good", 100))
"""KeePassXC's (PasswordHealth): a score <= 0 is bad, then below each bound, else excellent."""


def band(score: float) -> str:
    """KeePassXC's quality band of a score (entropy bits, less the reuse penalty)."""
    if score <= 0:
        return "bad"
    for name, below in BANDS:
        if score < below:
            return name
    return "excellent"


def score(bits: float, uses: int) -> float:
    """KeePassXC's score: the bits, less 15 for each other secret with the same value, and a
    reused value never above 74 (at best weak)."""
    if uses <= 1:
        return bits
    return min(bits - REUSE_PENALTY * (uses - 1), REUSED_CAP)


def bits(password: str, cardinality: int | None = None) -> float:
    """log2 of the guesses for ``password`` (its first MAX_LENGTH characters): zxcvbn's
    matches and search, a run of no pattern costing ``cardinality`` guesses a character
    (default: ``brute_force_cardinality``; zxcvbn's own is 10)."""
    password = password[:MAX_LENGTH]
    if not password:
        return 0.0
    if cardinality is None:
        cardinality = brute_force_cardinality(password)
    return math.log2(max(_guesses(password, _omnimatch(password), cardinality), 1.0))


def brute_force_cardinality(password: str) -> int:
    """zxcvbn-c's (the zxcvbn KeePassXC uses): the sizes of the character classes the password
    uses: 26 lower-case and 26 upper-case ASCII letters, 10 digits, 33 other ASCII characters,
    100 for any other character."""
    lower = upper = digit = other = wide = False
    for c in password:
        if "a" <= c <= "z":
            lower = True
        elif "A" <= c <= "Z":
            upper = True
        elif "0" <= c <= "9":
            digit = True
        elif c <= "\x7f":
            other = True
        else:
            wide = True
    return 26 * lower + 26 * upper + 10 * digit + 33 * other + 100 * wide


# --- the search (zxcvbn's scoring.most_guessable_match_sequence, in floats) --------------------


def _guesses(password: str, matches: list[dict[str, Any]], cardinality: int) -> float:
    """The fewest guesses of any sequence of matches and brute-force runs covering
    ``password``: zxcvbn's dynamic programme (the same candidates, in the same order, so the
    same ties), with brute force at ``cardinality`` and only the minimum kept, not the
    sequence."""
    from zxcvbn import scoring  # type: ignore[import-untyped]

    n = len(password)
    by_end: list[list[dict[str, Any]]] = [[] for _ in range(n)]
    for m in matches:
        by_end[m["j"]].append(m)
    for ending in by_end:
        ending.sort(key=lambda m: m["i"])
    # at each end k, by sequence length: the product of guesses, the metric, whether the
    # sequence ends in a pattern (True) or a brute-force run (False)
    best_pi: list[dict[int, float]] = [{} for _ in range(n)]
    best_g: list[dict[int, float]] = [{} for _ in range(n)]
    best_kind: list[dict[int, bool]] = [{} for _ in range(n)]
    grow = float(scoring.MIN_GUESSES_BEFORE_GROWING_SEQUENCE)
    factor = [float(math.factorial(length)) for length in range(n + 2)]
    additive = [grow ** (length - 1) for length in range(n + 2)]
    single, multi = (
        scoring.MIN_SUBMATCH_GUESSES_SINGLE_CHAR,
        scoring.MIN_SUBMATCH_GUESSES_MULTI_CHAR,
    )
    run = [0.0] + [
        max(float(cardinality) ** size, (single if size == 1 else multi) + 1.0)
        for size in range(1, n + 1)
    ]  # a brute-force run, by its size

    def estimate(m: dict[str, Any]) -> float:
        if m.get("guesses"):
            return float(m["guesses"])
        size = len(m["token"])
        least = 1 if size >= n else single if size == 1 else multi
        m["guesses"] = max(float(_ESTIMATES[m["pattern"]](m)), least)
        return float(m["guesses"])

    def update(k: int, i: int, guesses: float, length: int, pattern: bool) -> None:
        pi = guesses * best_pi[i - 1][length - 1] if length > 1 else guesses
        g = factor[length] * pi + additive[length]
        for other, other_g in best_g[k].items():
            if other <= length and other_g <= g:
                return
        best_g[k][length] = g
        best_pi[k][length] = pi
        best_kind[k][length] = pattern

    patterned: list[list[int]] = []  # at each end (once final): lengths ending in a pattern
    for k in range(n):
        for m in by_end[k]:
            i = m["i"]
            if i > 0:
                for length in list(best_g[i - 1]):
                    update(k, i, estimate(m), length + 1, True)
            else:
                update(k, 0, estimate(m), 1, True)
        update(k, 0, run[k + 1], 1, False)
        for i in range(1, k + 1):
            for length in patterned[i - 1]:  # a run follows a pattern, never another run
                update(k, i, run[k - i + 1], length + 1, False)
        patterned.append([length for length, kind in best_kind[k].items() if kind])
    return min(best_g[n - 1].values())


def _estimates() -> dict[str, Any]:
    from zxcvbn import scoring

    return {
        "dictionary": scoring.dictionary_guesses,
        "spatial": scoring.spatial_guesses,
        "repeat": scoring.repeat_guesses,
        "sequence": scoring.sequence_guesses,
        "regex": scoring.regex_guesses,
        "date": scoring.date_guesses,
    }


class _Lazy(dict[str, Any]):
    def __missing__(self, key: str) -> Any:
        self.update(_estimates())
        return self[key]


_ESTIMATES = _Lazy()


# --- the matchers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Words:
    """Every word of zxcvbn's lists: word -> ((list name, rank), ...) in the lists' order,
    and every prefix of a word (a word included)."""

    ranks: dict[str, tuple[tuple[str, int], ...]]
    prefixes: frozenset[str]
    dictionaries: dict[str, dict[str, int]]


@functools.cache
def _table() -> _Words:
    """Built once per process (about 0.5 s)."""
    from zxcvbn import matching

    ranks: dict[str, list[tuple[str, int]]] = {}
    prefixes: set[str] = set()
    for name, ranked in matching.RANKED_DICTIONARIES.items():
        for word, rank in ranked.items():
            ranks.setdefault(word, []).append((name, rank))
            prefixes.update(word[:k] for k in range(1, len(word) + 1))
    return _Words(
        {w: tuple(r) for w, r in ranks.items()}, frozenset(prefixes), matching.RANKED_DICTIONARIES
    )


def _dictionary_match(password: str) -> list[dict[str, Any]]:
    """zxcvbn's dictionary_match, with the scan of each start cut where no word begins."""
    words = _table()
    ranks, prefixes = words.ranks, words.prefixes
    matches: list[dict[str, Any]] = []
    length = len(password)
    lower = password.lower()
    for i in range(length):
        for j in range(i, length):
            word = lower[i : j + 1]
            if word not in prefixes:
                break
            for name, rank in ranks.get(word, ()):
                matches.append(
                    {
                        "pattern": "dictionary",
                        "i": i,
                        "j": j,
                        "token": password[i : j + 1],
                        "matched_word": word,
                        "rank": rank,
                        "dictionary_name": name,
                        "reversed": False,
                        "l33t": False,
                    }
                )
    return matches  # in (i, j) order, and by list within one (i, j), as zxcvbn sorts them


def _reverse_dictionary_match(password: str) -> list[dict[str, Any]]:
    matches = _dictionary_match(password[::-1])
    for match in matches:
        match["token"] = match["token"][::-1]
        match["reversed"] = True
        match["i"], match["j"] = len(password) - 1 - match["j"], len(password) - 1 - match["i"]
    return sorted(matches, key=lambda x: (x["i"], x["j"]))


def _l33t_match(password: str) -> list[dict[str, Any]]:
    from zxcvbn import matching

    matches: list[dict[str, Any]] = []
    table = matching.relevant_l33t_subtable(password, matching.L33T_TABLE)
    for sub in matching.enumerate_l33t_subs(table):
        if not sub:
            break
        for match in _dictionary_match(matching.translate(password, sub)):
            token = password[match["i"] : match["j"] + 1]
            if token.lower() == match["matched_word"]:
                continue  # only the matches that hold a real substitution
            match_sub = {k: v for k, v in sub.items() if k in token}
            match["l33t"] = True
            match["token"] = token
            match["sub"] = match_sub
            match["sub_display"] = ", ".join(f"{k} -> {v}" for k, v in match_sub.items())
            matches.append(match)
    matches = [m for m in matches if len(m["token"]) > 1]
    return sorted(matches, key=lambda x: (x["i"], x["j"]))


def _omnimatch(password: str) -> list[dict[str, Any]]:
    """zxcvbn's omnimatch, with our dictionary matchers in the same places."""
    from zxcvbn import matching

    dictionaries = _table().dictionaries
    matches = _dictionary_match(password)
    matches.extend(_reverse_dictionary_match(password))
    matches.extend(_l33t_match(password))
    for matcher in (
        matching.spatial_match,
        matching.repeat_match,
        matching.sequence_match,
        matching.regex_match,
        matching.date_match,
    ):
        matches.extend(matcher(password, _ranked_dictionaries=dictionaries))
    return sorted(matches, key=lambda x: (x["i"], x["j"]))
