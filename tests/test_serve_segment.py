"""Statement segmentation: German abbreviations, quotes, headlines, bullets, exact offsets."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exportstance.serve import segment
from exportstance.serve.segment import default_segmenter


def split(text: str) -> list[str]:
    statements = default_segmenter().split(text)
    assert all(text[s.start : s.end] == s.text for s in statements)
    return [s.text for s in statements]


def test_abbreviations_and_dates_do_not_end_a_statement():
    text = "Z. B. meldete Dr. Müller am 28. November höhere Umsätze. Danach fiel die Aktie um 2,1 Prozent."
    assert split(text) == [
        "Z. B. meldete Dr. Müller am 28. November höhere Umsätze.",
        "Danach fiel die Aktie um 2,1 Prozent.",
    ]


def test_a_quotation_stays_with_its_speaker():
    text = "„Wer aussperrt, verliert. Das ist klar“, sagte Huang. Der Kongress widerspricht."
    assert split(text) == ["„Wer aussperrt, verliert. Das ist klar“, sagte Huang.", "Der Kongress widerspricht."]
    assert split("Er sagte: »Wir handeln. Sofort.« Dann ging er.") == [
        "Er sagte: »Wir handeln. Sofort.«",
        "Dann ging er.",
    ]


def test_headline_is_its_own_statement():
    text = "Washington lockert Chip-Exporte\r\nDie US-Regierung erlaubt den Verkauf. Peking schweigt.\n\nNeuer Absatz."
    assert split(text) == [
        "Washington lockert Chip-Exporte",
        "Die US-Regierung erlaubt den Verkauf.",
        "Peking schweigt.",
        "Neuer Absatz.",
    ]


def test_bullet_lines_are_statements_without_their_marker():
    text = "Die Forderungen:\n- Schmuggel härter verfolgen\n- Lizenzen strenger prüfen\n• Verbündete einbinden"
    assert split(text) == [
        "Die Forderungen:",
        "Schmuggel härter verfolgen",
        "Lizenzen strenger prüfen",
        "Verbündete einbinden",
    ]


def test_a_hard_wrapped_sentence_is_joined():
    text = "Die Regierung will die Kontrollen\nverschärfen, sagte der Minister.\nDer Handel protestiert."
    assert split(text) == [
        "Die Regierung will die Kontrollen\nverschärfen, sagte der Minister.",
        "Der Handel protestiert.",
    ]


@pytest.mark.parametrize("text", ["", "   ", "\n\n \t\n", "\u2028"])
def test_blank_text_has_no_statements(text):
    assert split(text) == []


_PIECES = st.sampled_from(
    ["Dr.", "z. B.", "28.", "November", "Die", "Sperren", "wirken", "sagte", "er", "„", "“", "»", "«", '"',
     ".", "!", "?", ":", ",", "…", " ", "  ", "\n", "\n\n", "\r\n", "\u2028", "- ", "• ", "\t", "klein", "USA"]
)
_TEXTS = st.one_of(st.text(max_size=200), st.lists(_PIECES, max_size=60).map("".join))


@settings(max_examples=200, deadline=None)
@given(_TEXTS)
def test_offsets_are_exact_ordered_and_disjoint(text):
    statements = default_segmenter().split(text)
    previous_end = 0
    for s in statements:
        assert text[s.start : s.end] == s.text
        assert previous_end <= s.start < s.end
        assert s.text.strip() and "\n\n" not in s.text
        previous_end = s.end


def test_speedups_give_somajo_s_own_tokens():
    """The emoji-scan shortcut, the word-list prefilter and the one-pass offset alignment
    (segment._skip_emoji_scan_without_emoji, _match_word_lists_only_near_their_mark,
    _align_offsets_in_one_pass) change speed, not output: SoMaJo's tokens, classes,
    offsets and sentences are the same as plain SoMaJo's, on real-news statements and examples/,
    on text with emoji, emoticons and variation selectors, abbreviations and tokens with "+"/"&"
    where they are hard to find (first in a block, in brackets, repeated, upper case, the longest), and on text that takes SoMaJo's own
    alignment (not NFC, soft hyphens, zero-width and control characters, odd whitespace)."""
    import json
    from pathlib import Path

    from somajo import SoMaJo

    repo = Path(__file__).resolve().parents[1]
    rows = (repo / "labels" / "realnews.jsonl").read_text(encoding="utf-8").splitlines()[:400]
    texts = [json.loads(line)["text"] for line in rows]
    texts += [p.read_text(encoding="utf-8") for p in sorted((repo / "examples").glob("*.txt"))]
    texts += [
        "Nvidia 🚀 legt zu 👍🏽! Der Kongress ist sauer 😠. ☺️ Exporte? ❤ Nein :-) ok ♥‿♥ 🇩🇪🇺🇸 1️⃣ gut.",
        "Familie 👨‍👩‍👧 und ✌ Frieden. ©2025 ™ #Chips @Nvidia 🤖🤖🤖 Ende.",
        "Die Expo\u0301rte (nicht NFC) steigen. Cafe\u0301-Besitzer klagen.",
        "Export\u00adkontrollen wirken. Zero\u200bwidth und\u2060Joiner. Tab\tund\u00a0NBSP\u202f.",
        "Kontroll\u0007zeichen hier. \ufeffBOM am Anfang? „Ja.“ URL https://www.bis.gov/x.html ok.",
        "A.  B.   C. d. h. usw.   Ende…",
        "Bzw. am Anfang, (vgl. Abb. 3), z.B.u.a. und u.s.w., BZW. groß, geisteswissenschaftl. lang, "
        "face2face-komm. auch; Geisteswissenschaftlichkeit. Abb.Xyz. und St.Gallen, ca.5 Mrd. Dollar.",
        "AT&T, C++ und Q&A; S&P 500 fiel, R&D-Budget, H&M & Co., +49 und A+B+C; at&t klein, Fa. B&B.",
    ]
    plain = SoMaJo("de_CMC", split_sentences=True, character_offsets=True)
    fast = default_segmenter()._somajo
    assert fast._tokenizer._split_emojis.__name__ == "split_emojis"  # the shortcuts are in place
    assert fast._tokenize.__name__ == "tokenize"
    assert isinstance(fast._tokenizer.abbreviation, segment._PrefilteredPattern)
    assert isinstance(fast._tokenizer.token_with_plus_ampersand, segment._PrefilteredPattern)

    def tokens(somajo: SoMaJo) -> list[list[tuple]]:
        return [
            [(t.text, t.token_class, t.original_spelling, t.character_offset, t.space_after) for t in sentence]
            for sentence in somajo.tokenize_text(texts)
        ]

    assert tokens(fast) == tokens(plain)
