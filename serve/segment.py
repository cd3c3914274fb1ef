"""Split an article into statements (sentences) with exact character offsets into the original text.

Lines first, then sentences: a line break ends a statement (headlines, bullet points, datelines
carry no final punctuation, and a sentence splitter would glue them to the next line), except when
the next line starts with a lowercase letter, which marks a hard-wrapped sentence that goes on.
Each such block is split into sentences by SoMaJo (German), whose character offsets map every
sentence back to the original text, so ``text[start:end] == statement.text`` always holds.
A quotation that SoMaJo splits into several sentences is kept together (up to five sentences).
Leading bullet markers ("- ", "• ", ...) are not part of a statement.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterator

# Everything str.splitlines() treats as a line boundary.
_LINE = re.compile(r"[^\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]+")
_BULLET = re.compile(r"[-*•‣◦▪▫●○■□►▸–—·]\s+")
_MAX_QUOTE_SENTENCES = 5


@dataclass(frozen=True)
class Statement:
    """A sentence of an article: ``text == article[start:end]``."""

    text: str
    start: int
    end: int


def _blocks(text: str) -> list[tuple[int, int]]:
    """(start, end) of runs of lines that belong together (see the module docstring)."""
    blocks: list[tuple[int, int]] = []
    for match in _LINE.finditer(text):
        line = match.group()
        stripped = line.lstrip()
        if not stripped:
            continue
        start = match.start() + len(line) - len(stripped)
        if blocks and stripped[0].islower() and _joinable(text, blocks[-1][1], match.start()):
            blocks[-1] = (blocks[-1][0], match.end())
        else:
            blocks.append((start, match.end()))
    return blocks


def _joinable(text: str, prev_end: int, line_start: int) -> bool:
    """A wrapped line continues the previous block only across one line break, not a blank line."""
    return len(text[prev_end:line_start].splitlines()) == 1


def _quote_open(fragment: str) -> bool:
    """Does ``fragment`` end inside a quotation? („…“ and »…« counted, straight quotes by parity.)"""
    return (
        fragment.count("„") > fragment.count("“") + fragment.count("”")
        or fragment.count("»") > fragment.count("«")
        or fragment.count('"') % 2 == 1
    )


def _merge_open_quotes(text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Keep a multi-sentence quotation in one statement ("„Wir handeln. Sofort“, sagte er."):
    SoMaJo splits inside quotes, which leaves fragments without their speaker or context.
    At most ``_MAX_QUOTE_SENTENCES`` are merged, so a stray quote mark cannot swallow a paragraph."""
    merged: list[tuple[int, int]] = []
    count = 0
    for start, end in spans:
        if merged and count < _MAX_QUOTE_SENTENCES and _quote_open(text[merged[-1][0] : merged[-1][1]]):
            merged[-1] = (merged[-1][0], end)
            count += 1
        else:
            merged.append((start, end))
            count = 1
    return merged


class Segmenter:
    """SoMaJo sentence splitter with character offsets; build once (about 0.4 s), reuse for every text."""

    def __init__(self) -> None:
        from somajo import SoMaJo

        self._somajo: Any = SoMaJo("de_CMC", split_sentences=True, character_offsets=True)
        _skip_emoji_scan_without_emoji(self._somajo._tokenizer)
        _match_word_lists_only_near_their_mark(self._somajo._tokenizer)
        _align_offsets_in_one_pass(self._somajo)

    def split(self, text: str) -> list[Statement]:
        """Statements of ``text`` in order, non-overlapping, each with its exact character span."""
        statements: list[Statement] = []
        last_end = 0
        for block_start, block_end in _blocks(text):
            block = text[block_start:block_end]
            bullet = _BULLET.match(block)
            offset = block_start + (bullet.end() if bullet else 0)
            if bullet:
                block = block[bullet.end() :]
            spans = [
                (offset + sentence[0].character_offset[0], offset + sentence[-1].character_offset[1])
                for sentence in self._somajo.tokenize_text([block])
                if sentence
            ]
            for start, end in _merge_open_quotes(text, spans):
                start = max(start, last_end)
                if end > start and text[start:end].strip():
                    statements.append(Statement(text[start:end], start, end))
                    last_end = end
        return statements


def _skip_emoji_scan_without_emoji(tokenizer: Any) -> None:
    """Speed-up with the same output: SoMaJo 2.5 tests every grapheme of every token for emoji
    with a freshly looked-up regex (about half of its time on news text, which has none). A token
    without any emoji character cannot give an emoji boundary, so one precompiled search decides
    whether SoMaJo's own scan is needed (tests/test_serve_segment.py compares both on real text)."""
    import regex

    if not hasattr(tokenizer, "_split_emojis"):  # another SoMaJo version: leave it as it is
        return
    has_emoji = regex.compile(r"[\p{Extended_Pictographic}\p{Emoji_Presentation}\uFE0F]").search
    scan = tokenizer._split_emojis

    def split_emojis(node: Any, token_class: str = "emoticon") -> None:
        if has_emoji(node.value.text):
            scan(node, token_class)

    tokenizer._split_emojis = split_emojis


class _PrefilteredPattern:
    """A compiled regex whose ``finditer`` gives the same matches, but tries the pattern only at
    the positions ``starts`` finds (in C), not at every character. Exact when ``starts`` finds every
    position where a match can begin; everything else is the original pattern's."""

    def __init__(self, pattern: Any, starts: Any) -> None:
        self._pattern, self._starts = pattern, starts

    def finditer(self, text: str) -> Iterator[Any]:
        end = 0  # like finditer: the next match starts at or after the end of the last one
        for start in self._starts.finditer(text):
            if start.start() >= end and (match := self._pattern.match(text, start.start())):
                end = match.end()  # the pattern cannot match the empty string
                yield match

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pattern, name)


def _match_word_lists_only_near_their_mark(tokenizer: Any) -> None:
    """Speed-up with the same output: SoMaJo 2.5 finds its 1,123 German abbreviations and its
    168 tokens with "+" or "&" by trying one alternation of them all at every character of every
    block (about a third of its time on news text). Every abbreviation has a "." within its first
    21 characters (every token a "+" or "&"), and a match begins only there, after its own
    lookbehind; a prefilter finds those few positions and the pattern is tried only at them. The
    patterns are rebuilt from SoMaJo's lists and compared first, so the patch applies only where
    that holds (tests/test_serve_segment.py compares the output with plain SoMaJo on real text)."""
    import regex
    from somajo import utils

    language = getattr(tokenizer, "language", None)
    if not isinstance(language, str) or not hasattr(utils, "read_abbreviation_file"):
        return  # another SoMaJo version: leave it as it is

    def escaped(words: list[str]) -> str:
        return "|".join(regex.escape(word) for word in words)

    abbreviations = utils.read_abbreviation_file(f"abbreviations_{language[:2]}.txt", to_lower=True)
    pattern = getattr(tokenizer, "abbreviation", None)
    if getattr(pattern, "pattern", None) == (
        r"(?<![\p{L}.])(?:(?:(?:\p{L}\.){2,})|" + escaped(abbreviations) + r")+(?!\p{L}{1,3}\.)"
    ) and all("." in word for word in abbreviations):  # (?:\p{L}\.){2,} has its "." at offset 1
        k = max(1, max(word.index(".") for word in abbreviations))
        starts = regex.compile(rf"(?<![\p{{L}}.])(?=[^.]{{0,{k}}}\.)")
        tokenizer.abbreviation = _PrefilteredPattern(pattern, starts)

    plus_ampersand = [word for word in utils.read_abbreviation_file("tokens_with_plus_or_ampersand.txt")
                      if not regex.search(r"^\w+[&+]\w+$", word)]
    pattern = getattr(tokenizer, "token_with_plus_ampersand", None)
    if getattr(pattern, "pattern", None) == r"(?<!\w)(?:" + escaped(plus_ampersand) + r")(?!\w)" and all(
        "+" in word or "&" in word for word in plus_ampersand
    ):
        k = max(min(i for i, c in enumerate(word) if c in "+&") for word in plus_ampersand)
        starts = regex.compile(rf"(?<!\w)(?=[^+&]{{0,{k}}}[+&])")
        tokenizer.token_with_plus_ampersand = _PrefilteredPattern(pattern, starts)


def _align_offsets_in_one_pass(somajo: Any) -> None:
    """Speed-up with the same output: SoMaJo 2.5 aligns tokens to the text with three per-character
    dicts built for every block (the NFC mapping, needed only where NFC changes the text) and a
    fresh copy of the rest of the block for every token (quadratic in the block's length): about a
    third of its time on news text. For a block that is already NFC (nearly all text), each token is
    found with ``str.startswith`` at the current position; any other token, and any other block, goes
    through SoMaJo's own alignment (tests/test_serve_segment.py compares both on real text)."""
    import unicodedata

    import regex
    from somajo import alignment, doubly_linked_list

    tokenizer, splitter = getattr(somajo, "_tokenizer", None), getattr(somajo, "_sentence_splitter", None)
    if not (hasattr(somajo, "_tokenize") and hasattr(tokenizer, "_tokenize") and hasattr(splitter, "_split_sentences")
            and hasattr(alignment, "token_offsets") and hasattr(alignment, "_determine_offsets")):
        return  # another SoMaJo version: leave it as it is
    space = regex.compile(r"\s")  # the same whitespace class (and regex module) as SoMaJo's alignment

    def offsets(tokens: list[Any], raw: str, position: int) -> list[tuple[int, int]] | None:
        """Token offsets in an NFC ``raw``, or None where SoMaJo's alignment has to decide."""
        raw = space.sub(" ", raw)
        found: list[tuple[int, int]] = []
        i = 0
        for token in tokens:
            if token.markup:
                return None
            text = space.sub(" ", token.text if token.original_spelling is None else token.original_spelling)
            if raw.startswith(text, i):
                start = i
            elif raw.startswith(" " + text, i):
                start = i + 1
            else:
                return None  # skipped control or format characters: SoMaJo's character search
            i = start + len(text)
            found.append((start + position, i + position))
        return found

    def tokenize(token_info: tuple[list[Any], str, int], xml_input: bool) -> list[list[Any]]:
        token_list, raw, position = token_info
        tokens = tokenizer._tokenize(doubly_linked_list.DLL(token_list))
        spans = None
        if not xml_input and unicodedata.is_normalized("NFC", raw):
            spans = offsets(tokens, raw, position)
        if spans is None:
            spans = alignment.token_offsets(token_list, raw, position, xml_input, tokens)
        for token, span in zip(tokens, spans, strict=True):
            token.character_offset = span
        return splitter._split_sentences(tokens)

    somajo._tokenize = tokenize


@lru_cache(maxsize=1)
def default_segmenter() -> Segmenter:
    """The process-wide segmenter (SoMaJo's set-up is too slow to repeat per article)."""
    return Segmenter()
