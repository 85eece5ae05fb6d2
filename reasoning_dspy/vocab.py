"""Reasoning vocabularies and where their words occur in tokenized text.

A `Vocabulary` is a set of word groups (the paper's R): each group is named by the lower-cased,
whitespace-normalised form of its words, so "Wait", " wait" and "WAIT" all count for `wait`.

Words are matched on the *decoded text* of each prompt, not on token ids: every token id is
decoded once into the exact text it contributes (its leading space included — byte-level BPE's
"Ġ", SentencePiece's "▁"), a prompt's text is the concatenation of its pieces, and a
case-insensitive whole-word regex finds the words. That catches every tokenization variant the
tokenizer produces — leading space or not, any capitalisation, a word split into several tokens
("W" + "ait" at the start of a sentence in a small BPE), multi-word entries ("let me"), a word
glued to punctuation ("▁Wait,") — and rejects words inside other words ("Kuwait", "butter"),
which a token-id-sequence scan would match. Each occurrence is reported as the span of tokens
its characters touch.

The token-id mode (`Vocabulary.from_token_ids`) skips decoding: each listed id is a one-token match.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field, model_validator

#: The official ReasonScore vocabulary (Galichin et al. 2025).
REASONING_WORDS: tuple[str, ...] = (
    "alternatively", "hmm", "maybe", "wait", "perhaps", "let me", "therefore", "however", "but", "another",
)

# Between prompts in the concatenated text of a shard: not a word character and not a space, so
# no word or phrase can match across two prompts.
_PROMPT_SEPARATOR = "\n"


def normalize_word(word: str) -> str:
    """The group key of a word: lower-cased, stripped, inner whitespace collapsed to one space."""
    return " ".join(word.lower().split())


class Vocabulary(BaseModel):
    """Groups of reasoning words (`words`), or of token ids (`token_ids`) — exactly one of the two.

    >>> Vocabulary.default().groups
    ['alternatively', 'hmm', 'maybe', 'wait', 'perhaps', 'let me', 'therefore', 'however', 'but', 'another']
    """

    words: dict[str, list[str]] = Field(
        default_factory=dict, description="group name -> words/phrases matched as whole words, any case")
    token_ids: dict[str, list[int]] = Field(
        default_factory=dict, description="group name -> token ids, each a one-token match (token-id mode)")

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
                key = normalize_word(form)
                if not key:
                    raise ValueError(f"group {group!r} contains a blank word")
                if owner.setdefault(key, group) != group:
                    raise ValueError(f"word {form!r} is listed in two groups: {owner[key]!r} and {group!r}")
        return self

    # -- constructors -----------------------------------------------------------------------
    @classmethod
    def default(cls) -> Vocabulary:
        """The paper's official list of ten reasoning words."""
        return cls.from_words(REASONING_WORDS)

    @classmethod
    def from_words(cls, words: Iterable[str] | Mapping[str, Sequence[str]]) -> Vocabulary:
        """From words (grouped by their normalised form) or an explicit `{group: [words]}` mapping."""
        if isinstance(words, Mapping):
            return cls(words={str(g): [normalize_word(w) for w in ws] for g, ws in words.items()})
        if isinstance(words, str):
            raise TypeError("from_words takes a list of words, not a single string")
        groups: dict[str, list[str]] = {}
        for w in words:
            key = normalize_word(w)
            if key and key not in groups:
                groups[key] = [key]
        return cls(words=groups)

    @classmethod
    def from_token_ids(cls, ids: Iterable[int] | Mapping[str, Sequence[int]]) -> Vocabulary:
        """Token-id mode: `{group: [ids]}`, or a flat list where each id is its own group."""
        if isinstance(ids, Mapping):
            return cls(token_ids={str(g): [int(i) for i in v] for g, v in ids.items()})
        return cls(token_ids={str(int(i)): [int(i)] for i in dict.fromkeys(ids)})

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> Vocabulary:
        """Load a vocabulary file.

        - `.json`: a list of words, a `{group: [words]}` object, or `{"words": {...}}` /
          `{"token_ids": {group: [ids]}}` (the format `Vocabulary.model_dump()` writes);
        - anything else: plain text, one word or phrase per line, `#` starts a comment.
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
            return cls.from_words([line for line in lines if line])
        try:
            data: Any = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"vocabulary file {path} is not valid JSON: {err}") from None
        if isinstance(data, list):
            return cls.from_words([str(w) for w in data])
        if isinstance(data, dict) and ({"words", "token_ids"} & data.keys()):
            return cls.model_validate(data)
        if isinstance(data, dict):
            return cls.from_words({g: [ws] if isinstance(ws, str) else list(ws) for g, ws in data.items()})
        raise ValueError(f"vocabulary file {path}: expected a JSON list of words or an object of groups")

    # -- views ------------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        return "token_ids" if self.token_ids else "words"

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
            raise ValueError("matching words needs the model's tokenizer (or use a token-id vocabulary)")
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
