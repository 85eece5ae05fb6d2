"""Reasoning vocabularies and where their words occur in tokenized text.

A `Vocabulary` is a set of word groups (the paper's R), each named by the lower-cased,
whitespace-normalised form of its words ("Wait" and " wait" both belong to `wait`). How a group's
words are found is the vocabulary's `match` mode:

- `"exact"` (the paper's script, and `Vocabulary.default()`): each listed spelling is encoded with
  `tokenizer.encode(spelling, add_special_tokens=False)` and its token-id sequence is found wherever
  it occurs contiguously within a prompt. Spellings are distinct: " wait", "wait", " Wait" and
  "Wait" each match only their own token ids, so the default vocabulary matches exactly the official
  list (`REASONING_SPELLINGS`) — e.g. "But" at the start of a line, never a mid-sentence " but".
- `"words"` (broad): words are matched on the *decoded text* of each prompt. Every token id is
  decoded once into the exact text it contributes (its leading space included — byte-level BPE's
  "Ġ", SentencePiece's "▁"), a prompt's text is the concatenation of its pieces, and a
  case-insensitive whole-word regex finds the words. That catches every tokenization variant — leading
  space or not, any capitalisation, a word split into several tokens, multi-word entries ("let me"), a
  word glued to punctuation ("▁Wait,") — and rejects words inside other words ("Kuwait", "butter").

Either way an occurrence is reported as the span of tokens it covers and never crosses two prompts.
The token-id mode (`Vocabulary.from_token_ids`) skips the tokenizer: each listed id is a one-token match.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field, model_validator

#: The ten word groups of the official ReasonScore vocabulary (Galichin et al. 2025).
REASONING_WORDS: tuple[str, ...] = (
    "alternatively", "hmm", "maybe", "wait", "perhaps", "let me", "therefore", "however", "but", "another",
)

#: The official spellings, in the order of the paper's `extraction/reason_tokens.json`: four each
#: (with and without a leading space, capitalised or not) for eight words, and only "But" and
#: "Another" for the last two. `Vocabulary.default()` matches exactly these.
REASONING_SPELLINGS: tuple[str, ...] = (
    "alternatively", " alternatively", "Alternatively", " Alternatively",
    "hmm", " hmm", "Hmm", " Hmm",
    "maybe", " maybe", "Maybe", " Maybe",
    "wait", " wait", "Wait", " Wait",
    "perhaps", " perhaps", "Perhaps", " Perhaps",
    "let me", " let me", "Let me", " Let me",
    "therefore", " therefore", "Therefore", " Therefore",
    "however", " however", "However", " However",
    "But", "Another",
)

#: How a vocabulary's words are found: "exact" token-id sequences of each spelling (the paper's
#: script) or whole "words" in the decoded text, any case or tokenization.
MatchMode = Literal["exact", "words"]
MATCH_MODES: tuple[str, ...] = ("exact", "words")

# Between prompts in the concatenated text of a shard: not a word character and not a space, so
# no word or phrase can match across two prompts.
_PROMPT_SEPARATOR = "\n"


def normalize_word(word: str) -> str:
    """The group key of a word: lower-cased, stripped, inner whitespace collapsed to one space."""
    return " ".join(word.lower().split())


def _check_match(match: str) -> str:
    if match not in MATCH_MODES:
        raise ValueError(f"match must be 'exact' (each spelling's token ids, the paper's script) or 'words' "
                         f"(whole words in the decoded text, any case), got {match!r}")
    return match


class Vocabulary(BaseModel):
    """Groups of reasoning words (`words`), or of token ids (`token_ids`) — exactly one of the two.

    >>> Vocabulary.default().groups
    ['alternatively', 'hmm', 'maybe', 'wait', 'perhaps', 'let me', 'therefore', 'however', 'but', 'another']
    >>> Vocabulary.default().words["but"], Vocabulary.default(match="words").words["but"]
    (['But'], ['but'])
    """

    words: dict[str, list[str]] = Field(
        default_factory=dict,
        description="group name -> spellings (match='exact') or words/phrases (match='words')")
    token_ids: dict[str, list[int]] = Field(
        default_factory=dict, description="group name -> token ids, each a one-token match (token-id mode)")
    match: MatchMode = Field(
        "words", description="exact: each spelling's token ids, as listed (the paper's script); "
                             "words: whole words in the decoded text, any case or tokenization")

    @model_validator(mode="after")
    def _check(self) -> Vocabulary:
        if not any(self.words.values()) and not any(self.token_ids.values()):
            raise ValueError(
                "the reasoning vocabulary is empty: give at least one word (e.g. 'wait') or token id; "
                "Vocabulary.default() is the paper's list"
            )
        if self.words and self.token_ids:
            raise ValueError("a vocabulary holds either words or token ids, not both")
        owner: dict[str, str] = {}
        for group, forms in self.words.items():
            for form in forms:
                if not normalize_word(form):
                    raise ValueError(f"group {group!r} contains a blank word")
                key = form if self.match == "exact" else normalize_word(form)
                if owner.setdefault(key, group) != group:
                    raise ValueError(f"word {form!r} is listed in two groups: {owner[key]!r} and {group!r}")
        return self

    # -- constructors -----------------------------------------------------------------------
    @classmethod
    def default(cls, match: MatchMode = "exact") -> Vocabulary:
        """The paper's ten word groups: its 34 exact spellings (`REASONING_SPELLINGS`, the official
        list), or with `match="words"` the ten words in every case, spacing and tokenization."""
        if match == "words":
            return cls.from_words(REASONING_WORDS, match="words")
        return cls.from_words(REASONING_SPELLINGS, match=_check_match(match))

    @classmethod
    def from_words(cls, words: Iterable[str] | Mapping[str, Sequence[str]], *,
                   match: MatchMode = "words") -> Vocabulary:
        """From words (grouped by their normalised form) or an explicit `{group: [words]}` mapping.

        `match="exact"` keeps each spelling as given (leading space and case matter, as in the
        paper's script); `match="words"` stores the normalised words.
        """
        if isinstance(words, str):
            raise TypeError("from_words takes a list of words, not a single string")
        keep = str if _check_match(match) == "exact" else normalize_word
        if isinstance(words, Mapping):
            return cls(words={str(g): [keep(w) for w in ws] for g, ws in words.items()}, match=match)
        groups: dict[str, list[str]] = {}
        for w in words:
            key = normalize_word(w)
            if key and keep(w) not in groups.setdefault(key, []):
                groups[key].append(keep(w))
        return cls(words=groups, match=match)

    @classmethod
    def from_token_ids(cls, ids: Iterable[int] | Mapping[str, Sequence[int]]) -> Vocabulary:
        """Token-id mode: `{group: [ids]}`, or a flat list where each id is its own group."""
        if isinstance(ids, Mapping):
            return cls(token_ids={str(g): [int(i) for i in v] for g, v in ids.items()})
        return cls(token_ids={str(int(i)): [int(i)] for i in dict.fromkeys(ids)})

    @classmethod
    def from_file(cls, path: str | os.PathLike, *, match: MatchMode | None = None) -> Vocabulary:
        """Load a vocabulary file; `match` overrides the mode the file's format implies.

        - `.json`: a list of spellings (the format of the paper's `reason_tokens.json`: exact
          matching), a `{group: [words]}` object (words), or `{"words": {...}, "match": ...}` /
          `{"token_ids": {group: [ids]}}` (the format `Vocabulary.model_dump()` writes);
        - anything else: plain text, one word or phrase per line, `#` starts a comment (words).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"vocabulary file {str(path)!r} does not exist")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"vocabulary file {str(path)!r} is not UTF-8 text (byte {err.start}: {err.reason}); "
                             "pass a .txt file with one word per line, or a .json file") from None
        if path.suffix.lower() != ".json":
            lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
            return cls.from_words([line for line in lines if line], match=match or "words")
        try:
            data: Any = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"vocabulary file {path} is not valid JSON: {err}") from None
        if isinstance(data, list):
            return cls.from_words([str(w) for w in data], match=match or "exact")
        if isinstance(data, dict) and ({"words", "token_ids"} & data.keys()):
            return cls.model_validate(data).with_match(match)
        if isinstance(data, dict):
            return cls.from_words({g: [ws] if isinstance(ws, str) else list(ws) for g, ws in data.items()},
                                  match=match or "words")
        raise ValueError(f"vocabulary file {path}: expected a JSON list of words or an object of groups")

    def with_match(self, match: MatchMode | None) -> Vocabulary:
        """The same words found another way (`None`: unchanged). A token-id vocabulary has no words
        to match, so asking it for a match mode is an error."""
        if match is None:
            return self
        if self.token_ids:
            raise ValueError(f"match={match!r} applies to word vocabularies; this one lists token ids")
        return self.model_validate({**self.model_dump(), "match": _check_match(match)})

    # -- views ------------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        """How occurrences are found: "exact", "words" or "token_ids"."""
        return "token_ids" if self.token_ids else self.match

    @property
    def groups(self) -> list[str]:
        """Group names in a fixed order: column j of every per-group tensor is `groups[j]`."""
        return list(self.token_ids or self.words)

    def matcher(self, tokenizer=None) -> VocabMatcher:
        return VocabMatcher(self, tokenizer)


def token_pieces(tokenizer) -> list[str]:
    """`pieces[id]` is the text token `id` adds when it follows other text, leading space included.

    Decoding a token alone drops a SentencePiece token's leading space, so each token is decoded
    after an anchor token and the anchor's own text is cut off again.
    """
    n = len(tokenizer)
    anchor = tokenizer.encode("a", add_special_tokens=False)
    opts = dict(skip_special_tokens=False, clean_up_tokenization_spaces=False)
    base = tokenizer.decode(anchor, **opts)
    texts = tokenizer.batch_decode([anchor + [i] for i in range(n)], **opts)
    return [t[len(base):] if t.startswith(base) else tokenizer.decode([i], **opts) for i, t in enumerate(texts)]


class VocabMatcher:
    """Finds vocabulary occurrences in a run of cached tokens (one or more whole prompts)."""

    def __init__(self, vocab: Vocabulary, tokenizer=None):
        self.vocab = vocab
        self.groups = vocab.groups
        if vocab.mode == "token_ids":
            self._id_group = {i: g for g, ids in enumerate(vocab.token_ids.values()) for i in ids}
            self.pieces = token_pieces(tokenizer) if tokenizer is not None else None
            return
        if tokenizer is None:
            what = "spellings" if vocab.mode == "exact" else "words"
            raise ValueError(f"matching {what} needs the model's tokenizer (or use a token-id vocabulary)")
        if vocab.mode == "exact":
            self._sequences = spelling_ids(vocab, tokenizer)
            return
        self.pieces = token_pieces(tokenizer)
        self._piece_len = np.array([len(p) for p in self.pieces], dtype=np.int64)
        self._form_group = {normalize_word(f): g for g, forms in enumerate(vocab.words.values()) for f in forms}
        # Longest first, so "let me" wins over a shorter word starting the same way.
        alternatives = sorted(self._form_group, key=len, reverse=True)
        body = "|".join(r"[ \t]+".join(map(re.escape, form.split(" "))) for form in alternatives)
        self._regex = re.compile(rf"(?<!\w)(?:{body})(?!\w)", re.IGNORECASE)

    def find(self, token_ids: np.ndarray, seq_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Occurrences in tokens ordered by (prompt, position): arrays `(first, last, group)`, each
        `[n_occurrences]` — the first and last token index of the match and its group index."""
        token_ids = np.asarray(token_ids, dtype=np.int64)
        seq_ids = np.asarray(seq_ids, dtype=np.int64)
        empty = np.zeros(0, dtype=np.int64)
        if token_ids.size == 0:
            return empty, empty, empty
        if self.vocab.mode == "token_ids":
            group = np.array([self._id_group.get(int(t), -1) for t in token_ids], dtype=np.int64)
            idx = np.flatnonzero(group >= 0)
            return idx, idx.copy(), group[idx]
        if self.vocab.mode == "exact":
            return find_sequences(token_ids, seq_ids, self._sequences)
        if int(token_ids.max()) >= len(self.pieces) or int(token_ids.min()) < 0:
            raise ValueError(
                f"token id {int(token_ids.max())} is outside the tokenizer's vocabulary of {len(self.pieces)}: "
                "the activations were made with a different tokenizer"
            )
        new_prompt = np.zeros(len(token_ids), dtype=np.int64)
        new_prompt[1:] = seq_ids[1:] != seq_ids[:-1]
        lengths = self._piece_len[token_ids]
        ends = np.cumsum(lengths + new_prompt * len(_PROMPT_SEPARATOR))
        starts = ends - lengths  # char offset of each token's piece in `text`
        pieces = self.pieces
        text = "".join((_PROMPT_SEPARATOR + pieces[t]) if b else pieces[t]
                       for t, b in zip(token_ids.tolist(), new_prompt.tolist(), strict=True))
        firsts, lasts, groups = [], [], []
        for m in self._regex.finditer(text):
            firsts.append(m.start())
            lasts.append(m.end() - 1)
            groups.append(self._form_group[normalize_word(m.group())])
        if not groups:
            return empty, empty, empty
        first = np.searchsorted(starts, np.array(firsts), side="right") - 1
        last = np.searchsorted(starts, np.array(lasts), side="right") - 1
        return first.astype(np.int64), last.astype(np.int64), np.array(groups, dtype=np.int64)


def spelling_ids(vocab: Vocabulary, tokenizer) -> list[tuple[np.ndarray, int]]:
    """`(token ids, group index)` of every spelling of an exact-match vocabulary, encoded as the
    paper's script does: `tokenizer.encode(spelling, add_special_tokens=False)`."""
    out = []
    for g, forms in enumerate(vocab.words.values()):
        for form in forms:
            ids = tokenizer.encode(form, add_special_tokens=False)
            if not ids:
                raise ValueError(f"spelling {form!r} encodes to no tokens with this tokenizer")
            out.append((np.asarray(ids, dtype=np.int64), g))
    return out


def find_sequences(
    token_ids: np.ndarray, seq_ids: np.ndarray, sequences: Sequence[tuple[np.ndarray, int]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every contiguous run of each id sequence inside one prompt, as `(first, last, group)` sorted by
    first token: the official script's match (`RollingMean._compute_single_mask`), kept within prompts."""
    n = len(token_ids)
    firsts, groups, lengths = [], [], []
    for ids, g in sequences:
        m = len(ids)
        if m > n:
            continue
        start = np.flatnonzero(token_ids[: n - m + 1] == ids[0])
        for j in range(1, m):
            start = start[(token_ids[start + j] == ids[j]) & (seq_ids[start + j] == seq_ids[start])]
        firsts.append(start)
        groups.append(np.full(len(start), g, dtype=np.int64))
        lengths.append(np.full(len(start), m, dtype=np.int64))
    if not firsts:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    first, group, length = (np.concatenate(a).astype(np.int64) for a in (firsts, groups, lengths))
    order = np.lexsort((group, first))
    return first[order], (first + length - 1)[order], group[order]
