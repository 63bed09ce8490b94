"""Message texts for the reference social data set, and a vectorised e-mail matcher.

Building one Python string per message is the costly part of generating millions of messages, so
each generation builds a pool of distinct texts per content class (spam or not, with an e-mail
address or not) from pre-made pieces, and messages pick from their class's pool: one gather.
Texts without an address never match the spam rules' e-mail regex ``\\S+@\\S+\\.\\S+``, though
some use "@" in other ways (mentions, "@ the station"), so a matcher must get the regex right.

:func:`email_flags` answers "does ``re.search(EMAIL_PATTERN, text)`` match?" for a whole column
of texts without a Python loop per text (the regex backtracks and costs microseconds per text).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import cast

import numpy as np
import numpy.typing as npt

__all__ = ["EMAIL_PATTERN", "TextPools", "email_flags"]

I64 = npt.NDArray[np.int64]
Codes = npt.NDArray[np.uint32] | npt.NDArray[np.uint8]  # code points of joined texts

EMAIL_PATTERN = r"\S+@\S+\.\S+"


def _pieces(*lines: str) -> tuple[str, ...]:
    """Vocabulary written as "|"-separated lines (a piece may be empty)."""
    return tuple("".join(lines).split("|"))


_OPENERS = _pieces(
    "|||hey |hi |hello |yo |ok so |lol |omg |btw |haha |sorry, |so |guess what, |",
    "morning! |quick q: |ugh |wow ",
)
_BODIES = _pieces(
    "are we still on for tonight?|did you see the game last night|",
    "running late, there in 10|can you send me the photos from saturday|happy birthday!!|",
    "thanks for dinner yesterday|what time is the meeting tomorrow?|",
    "i finished the book you lent me|want to grab coffee this week?|",
    "my flight got delayed again|call me when you can|that movie was so good|",
    "the kids loved the park|can't believe it's monday already|did you feed the cat?|",
    "see you at the gym at 6|just landed|the wifi here is terrible|",
    "let me know if you need anything|i'll bring the snacks|sure, sounds good|no way!|",
    "ok see you then|haha yes|where did you park?|is the party still on saturday?|",
    "can you pick up milk on the way home|good luck with the interview|",
    "the train is packed again|I miss you guys|send me the address pls|",
    "@anna did you see this?|meet @ the station at 5.30|lunch @noon?|",
    "jo@home tonight, you in?|who's coming on friday|just saw your post, congrats!|",
    "back home, so tired|did mum call you?|we should plan a trip this summer|",
    "the report is due thursday|my phone is almost dead|can I borrow your charger|",
    "great run this morning|what are you cooking tonight?|they cancelled the concert|",
    "the dog ate my sandwich|remind me to buy a gift for sam|check your inbox|",
    "thx, got it|on my way",
)
_GREETINGS = _pieces(
    "hey|hi|hello|yo|morning|dear|ok",
)
_CLOSERS = _pieces(
    "||| :)| :D| x| see ya| ttyl| <3|!| haha| thanks!",
)
_LEADS = _pieces(
    "my new email is|send it to|you can reach me at|mail the doc to|cc|",
    "my work address is|forward it to|write me at",
)
_SPAM_OPENERS = _pieces(
    "||URGENT: |Dear friend, |hi dear, |!!! |Hello, |ATTN: ",
)
_SPAM_BODIES = _pieces(
    "CONGRATULATIONS you have won a $1000 gift card|",
    "hot singles in your area want to meet you|make $5000 a week working from home|",
    "cheap meds, no prescription needed|your account has been suspended, verify now|",
    "claim your free iphone today|earn crypto fast, guaranteed returns|",
    "you have been selected for a cash prize|lose 10kg in 2 weeks with this one trick|",
    "exclusive deal just for you, 90% off|",
    "a wealthy investor wants to share his fortune with you|",
    "your package could not be delivered|final notice: unpaid invoice attached|",
    "get rich with this secret system|you are our lucky visitor of the day",
)
_SPAM_TAILS = _pieces(
    "| act now!!!| reply YES to claim| limited time only| follow @deals_daily|",
    " click here: bit.ly/x9k2| visit www.best-deals.biz now| text WIN to 80808",
)
_SPAM_LEADS = _pieces(
    "contact|reply to|write to|email us at|send your details to|claim at|more info:",
)
_NAMES = _pieces(
    "anna|tom|maria|li|omar|sofia|ben|chen|lucas|emma|noah|mia|ali|ivan|sara|jon|kim|raj|",
    "lea|max|nina|paul|eva|yuki|amir|zoe|dan|ola|hugo|ines|felix|rosa|sam|alex|jana|leo|",
    "tina|ravi",
)
_DOMAINS = _pieces(
    "gmail.com|yahoo.com|outlook.com|mail.com|hotmail.com|proton.me|icloud.com|web.de|",
    "gmx.net|fastmail.fm|example.org|company.io",
)
_SPAM_DOMAINS = _pieces(
    "prize-center.biz|claims.info|winner-mail.ru|secure-verify.net|bestdeals.top|",
    "cashnow.xyz",
)


def _choose(rng: np.random.Generator, options: tuple[str, ...] | list[str], n: int) -> list[str]:
    return [options[i] for i in rng.integers(0, len(options), n).tolist()]


def _emails(rng: np.random.Generator, n: int, domains: tuple[str, ...]) -> list[str]:
    names, seconds = _choose(rng, _NAMES, n), _choose(rng, _NAMES, n)
    seps = _choose(rng, ("", ".", "_", ".", ""), n)
    numbers = rng.integers(1, 2000, n).tolist()
    style = rng.integers(0, 3, n).tolist()
    doms = _choose(rng, domains, n)
    out = []
    for name, second, sep, number, kind, dom in zip(
        names, seconds, seps, numbers, style, doms, strict=True
    ):
        local = (name + sep + second, f"{name}{number}", f"{name}{sep}{second}{number % 100}")[kind]
        out.append(f"{local}@{dom}")
    return out


def _openers(rng: np.random.Generator, n: int) -> list[str]:
    """Plain openers, or a greeting with a first name ("hey maria, ") in a third of texts."""
    plain, greets, names = (
        _choose(rng, _OPENERS, n),
        _choose(rng, _GREETINGS, n),
        _choose(rng, _NAMES, n),
    )
    named = (rng.random(n) < 1 / 3).tolist()
    return [
        f"{g} {nm}, " if use else p
        for p, g, nm, use in zip(plain, greets, names, named, strict=True)
    ]


def _normal(rng: np.random.Generator, n: int, with_email: bool) -> list[str]:
    opens, bodies, closes = _openers(rng, n), _choose(rng, _BODIES, n), _choose(rng, _CLOSERS, n)
    if not with_email:
        return [o + b + c for o, b, c in zip(opens, bodies, closes, strict=True)]
    leads, emails = _choose(rng, _LEADS, n), _emails(rng, n, _DOMAINS)
    return [
        f"{o}{b}, {lead} {e}{c}"
        for o, b, lead, e, c in zip(opens, bodies, leads, emails, closes, strict=True)
    ]


def _spam(rng: np.random.Generator, n: int, with_email: bool) -> list[str]:
    opens, bodies = _choose(rng, _SPAM_OPENERS, n), _choose(rng, _SPAM_BODIES, n)
    refs = rng.integers(1000, 99999, n).tolist()
    tails = [t + f" (ref {r})" for t, r in zip(_choose(rng, _SPAM_TAILS, n), refs, strict=True)]
    if not with_email:
        return [o + b + t for o, b, t in zip(opens, bodies, tails, strict=True)]
    leads, emails = _choose(rng, _SPAM_LEADS, n), _emails(rng, n, _SPAM_DOMAINS + _DOMAINS)
    return [
        f"{o}{b} {lead} {e}{t}"
        for o, b, lead, e, t in zip(opens, bodies, leads, emails, tails, strict=True)
    ]


@dataclass(frozen=True, slots=True, eq=False)
class TextPools:
    """Four pools of ``size`` texts: normal, normal with e-mail, spam, spam with e-mail."""

    texts: npt.NDArray[np.object_]
    size: int

    @classmethod
    def build(cls, rng: np.random.Generator, size: int) -> TextPools:
        """Draw ``size`` texts of each class from ``rng``."""
        parts = [
            _normal(rng, size, False),
            _normal(rng, size, True),
            _spam(rng, size, False),
            _spam(rng, size, True),
        ]
        texts = np.empty(4 * size, dtype=object)
        texts[:] = [t for part in parts for t in part]
        return cls(texts, size)

    def pick(
        self, rng: np.random.Generator, spam: npt.NDArray[np.bool_], email: npt.NDArray[np.bool_]
    ) -> npt.NDArray[np.object_]:
        """One random text of the matching class for each row."""
        cls = spam.astype(np.int64) * 2 + email
        return self.texts[cls * self.size + rng.integers(0, self.size, spam.shape[0])]


# U+3000 is the last code point that str.isspace() (and so the regex \\s) accepts.
_LAST_SPACE = 0x3000
_CHUNK_TEXTS = 1 << 18
_WINDOW = 40  # characters examined after each "@" before falling back to whole-token bounds
# Whitespace characters (so no token spans two texts) that real texts rarely contain.
_SEPARATORS = ("\x1e", "\x1f", "\x1d", "\x1c", "\n")


@cache
def _whitespace_table() -> npt.NDArray[np.bool_]:
    """``table[c]``: is code point c whitespace for ``re``; one extra False entry for c > U+3000."""
    return np.array([chr(c).isspace() for c in range(_LAST_SPACE + 1)] + [False], dtype=bool)


def _codes(text: str) -> Codes:
    if text.isascii():
        return np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def _match_chunk(texts: list[str]) -> npt.NDArray[np.bool_]:
    """Exact regex result for each text of a chunk (all of which contain "@").

    ``\\S+@\\S+\\.\\S+`` matches iff some whitespace-delimited token has an "@" that is not its
    first character, followed (at least two characters later) by a "." that is neither of its
    last character: check every "@" against its token's bounds and the token's last such ".".
    """
    joined = "\n".join(texts)  # "\n" is whitespace: no token spans two texts
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    starts = np.cumsum(lengths + 1) - (lengths + 1)
    codes = _codes(joined)
    spaces = np.flatnonzero(_is_space(codes))
    ats = np.flatnonzero(codes == ord("@"))
    dots = np.flatnonzero(codes == ord("."))
    after = np.searchsorted(spaces, ats)
    token_end = np.append(spaces, codes.size)[after]
    token_start = np.where(after > 0, spaces[np.maximum(after - 1, 0)] + 1, 0)
    last_dot_at = np.searchsorted(dots, token_end - 1) - 1  # last "." before the token's end-1
    last_dot = np.where(last_dot_at >= 0, dots[np.maximum(last_dot_at, 0)], -1)
    hit = (ats >= token_start + 1) & (last_dot >= ats + 2)
    out = np.zeros(len(texts), dtype=bool)
    out[np.searchsorted(starts, ats[hit], side="right") - 1] = True
    return out


def _is_space(codes: Codes) -> npt.NDArray[np.bool_]:
    table = _whitespace_table()
    return table[codes] if codes.dtype == np.uint8 else table[np.minimum(codes, _LAST_SPACE + 1)]


def _marks(codes: Codes, sep: str) -> tuple[I64, I64]:
    """Positions of every "@" and of every ``sep`` in ``codes`` (one pass over the text)."""
    marked = np.flatnonzero((codes == ord("@")) | (codes == ord(sep)))
    kind = codes[marked]
    return marked[kind == ord("@")], marked[kind == ord(sep)]


def _joined_codes(
    items: list[str],
) -> tuple[Codes, I64, I64]:
    """Code points of all texts, each followed by a whitespace separator, then ``_WINDOW``
    spaces (so a window after any "@" stays inside); the "@"s and the separators' positions."""
    items.append(" " * _WINDOW)
    for sep in _SEPARATORS:
        codes = _codes(sep.join(items))
        ats, bounds = _marks(codes, sep)
        if bounds.size == len(items) - 1:
            return codes, ats, bounds
        # Some text contains this separator; try the next one.
    lengths = np.fromiter(map(len, items), dtype=np.int64, count=len(items))
    codes = _codes("\n".join(items))
    return codes, np.flatnonzero(codes == ord("@")), np.cumsum(lengths + 1)[:-1] - 1


def _is_space_block(block: Codes) -> npt.NDArray[np.bool_]:
    if block.dtype == np.uint8:
        # ASCII whitespace for str.isspace(): \t \n \v \f \r, \x1c-\x1f and the space.
        return ((block >= 9) & (block <= 13)) | ((block >= 28) & (block <= 32))
    return _is_space(block)


def email_flags(texts: npt.NDArray[np.object_]) -> npt.NDArray[np.bool_]:
    """For each str, whether ``re.search(EMAIL_PATTERN, text)`` would match; no per-text loop.

    For every "@" with a non-space character before it, the next ``_WINDOW`` characters are
    examined at once: a match needs a "." at least two characters on whose next character is
    still inside the token. "@"s whose token outruns the window undecided are settled by the
    exact token-bounds check on their texts.
    """
    n = int(texts.shape[0])
    out = np.zeros(n, dtype=bool)
    if n == 0:
        return out
    codes, ats, bounds = _joined_codes(texts.tolist())
    ats = ats[ats > 0]
    ats = ats[~_is_space(codes[ats - 1])]
    windows = np.lib.stride_tricks.sliding_window_view(codes, _WINDOW)
    columns = np.arange(_WINDOW, dtype=np.int64)
    undecided = []
    for lo in range(0, ats.size, _CHUNK_TEXTS):
        at = ats[lo : lo + _CHUNK_TEXTS]
        char = cast(Codes, windows[at + 1])  # the _WINDOW characters after each "@"
        space = _is_space_block(char)
        token_end = np.where(space.any(axis=1), space.argmax(axis=1), _WINDOW)
        dot_ok = (char == ord(".")) & (columns >= 1) & (columns + 1 < token_end[:, None])
        match = dot_ok.any(axis=1)
        out[np.searchsorted(bounds, at[match])] = True
        undecided.append(at[~match & (token_end == _WINDOW)])
    rest = np.unique(np.searchsorted(bounds, np.concatenate([np.zeros(0, np.int64), *undecided])))
    rest = rest[~out[rest]]
    for lo in range(0, rest.size, _CHUNK_TEXTS):
        chunk = rest[lo : lo + _CHUNK_TEXTS]
        out[chunk] = _match_chunk(texts[chunk].tolist())
    return out
