"""Chat examples as training tensors, and the loss on them.

Tokenisation matches inference exactly: the prompt is `render_chat(tokenizer, messages[:-1])`, the
ids the in-process engine feeds the model, and the answer is what the chat template renders after
it, up to and including the end-of-turn token at which generation stops. Only answer tokens carry a
label. The fast loss runs the transformer body, gathers the labelled positions and applies the LM
head there only: with a 49k vocabulary the full-sequence head and softmax are a large share of
the cost, and prompt positions need neither. `reference_loss` is the plain full-logits path the fast one is checked against.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reasoning_dspy.engine.requests import render_chat

IGNORE = -100  # label of a position that carries no loss (prompt, padding)
BUCKET_BATCHES = 16  # length-sorting window, in batches: wide enough to group lengths, narrow enough to mix
_ROLES = ("system", "user", "assistant")


class ChatTemplateMismatchError(ValueError):
    """The chat template renders a conversation whose prompt ids differ from what inference feeds the model."""


@dataclass
class Encoded:
    """One example as ids: `input_ids` (prompt + answer + end of turn), `labels` (IGNORE on the prompt)
    and the loss weight of each label (`None`: 1 on every answer token)."""

    input_ids: list[int]
    labels: list[int]
    weights: list[float] | None = None

    def __len__(self) -> int:
        return len(self.input_ids)

    def cut(self, length: int) -> Encoded:
        return Encoded(self.input_ids[:length], self.labels[:length],
                       None if self.weights is None else self.weights[:length])


#: A DSPy `ChatAdapter` field marker line; the token after it starts the field's value.
FIELD_MARKER = re.compile(r"\[\[ ## (\w+) ## \]\]\n")


@dataclass
class EncodedSet:
    """The encoded examples, and how many were cut or left out for exceeding `max_length`."""

    examples: list[Encoded]
    truncated: int = 0
    dropped: int = 0

    @property
    def lengths(self) -> list[int]:
        return [len(e) for e in self.examples]


def check_examples(examples: Sequence[Mapping[str, Any]]) -> list[list[dict[str, str]]]:
    """The messages of each example, validated: `{"messages": [...]}` in the OpenAI/DSPy fine-tuning
    format, roles system/user/assistant with text content, the last message the assistant's answer."""
    if isinstance(examples, (str, bytes)) or not isinstance(examples, Sequence):
        raise TypeError(f"examples must be a list of {{'messages': [...]}} dicts, got {type(examples).__name__}")
    if not examples:
        raise ValueError("no examples to train on")
    out = []
    for i, ex in enumerate(examples):
        messages = ex.get("messages") if isinstance(ex, Mapping) else None
        if not isinstance(messages, Sequence) or isinstance(messages, str) or len(messages) < 2:
            raise ValueError(f"example {i} must be {{'messages': [..., {{'role': 'assistant', 'content': ...}}]}} "
                             "with at least one message before the answer")
        msgs = []
        for j, m in enumerate(messages):
            role, content = (m.get("role"), m.get("content")) if isinstance(m, Mapping) else (None, None)
            if role not in _ROLES or not isinstance(content, str):
                raise ValueError(f"example {i}, message {j}: expected {{'role': one of {list(_ROLES)}, 'content': "
                                 f"str}}, got {m!r:.120}")
            msgs.append({"role": role, "content": content})
        if msgs[-1]["role"] != "assistant":
            raise ValueError(f"example {i}: the last message must be the assistant's answer, got role "
                             f"{msgs[-1]['role']!r}")
        out.append(msgs)
    return out


Spans = list[tuple[int, int]]


def check_untrained(examples: Sequence[Mapping[str, Any]]) -> list[Spans]:
    """Each example's optional `untrained` list: `[start, end)` character spans of the answer (the last
    message's content) that carry no loss, such as a deliberately wrong value the answer goes on to
    correct: the model should learn the correction, never to write the mistake."""
    out = []
    for i, ex in enumerate(examples):
        spans = ex.get("untrained") or []
        length = len(ex["messages"][-1]["content"])
        checked = []
        for span in spans:
            ok = (isinstance(span, Sequence) and len(span) == 2 and all(isinstance(v, int) for v in span)
                  and 0 <= span[0] < span[1] <= length)
            if not ok:
                raise ValueError(f"example {i}: untrained spans must be [start, end) character offsets with "
                                 f"0 <= start < end <= {length} (the answer's length), got {span!r}")
            checked.append((span[0], span[1]))
        out.append(checked)
    return out


def fingerprint(conversations: Sequence[Sequence[Mapping[str, str]]], untrained: Sequence[Spans] | None = None) -> str:
    """A short hash of the training data, saved with the adapter and checked on resume."""
    data: list[Any] = [list(c) for c in conversations]
    if untrained is not None and any(untrained):
        data = [data, [list(map(list, s)) for s in untrained]]
    text = json.dumps(data, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def stop_ids(model: nn.Module | None, tokenizer: Any) -> set[int]:
    """Token ids at which generation stops: the model's generation config, else the tokenizer's EOS."""
    config = getattr(model, "generation_config", None)
    eos = getattr(config, "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    return set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}


def _tokenize_text(tokenizer: Any, text: str) -> list[int]:
    """Ids of a rendered conversation, with BOS exactly once (the rule `render_chat` applies)."""
    bos = tokenizer.bos_token
    return tokenizer(text, add_special_tokens=not (bos and text.startswith(bos)))["input_ids"]


def encode_example(tokenizer: Any, messages: list[dict[str, str]], stops: set[int], index: int = 0,
                   field_start_weight: float = 1.0, field_start_tokens: int = 1,
                   untrained: Spans = ()) -> Encoded:
    """Prompt ids as inference renders them, then the answer and its end-of-turn token(s), labelled.

    The whole conversation is rendered by the chat template; its ids must start with the prompt ids
    (else `ChatTemplateMismatchError`). The answer runs up to the last stop token the template emits
    after it (text after that, such as a newline, is never generated and is not trained). A template
    that emits no stop token gets the tokenizer's EOS appended, so the model learns to stop.

    With `field_start_weight` != 1, the first `field_start_tokens` tokens of each output field's value
    (from `field_starts`) weigh that much in the loss. Tokens that overlap an `untrained` span of the
    answer text weigh 0.
    """
    prompt = render_chat(tokenizer, messages[:-1], system=None)
    if getattr(tokenizer, "chat_template", None):
        full_text = tokenizer.apply_chat_template(messages, tokenize=False)
    else:
        full_text = tokenizer.decode(prompt, skip_special_tokens=False) + " " + messages[-1]["content"]
    full = _tokenize_text(tokenizer, full_text)
    if full[:len(prompt)] != prompt:
        at = next((k for k, (a, b) in enumerate(zip(prompt, full, strict=False)) if a != b), len(full))
        raise ChatTemplateMismatchError(
            f"example {index}: the chat template's rendering of the whole conversation does not start with the "
            f"prompt ids inference uses (render_chat): they differ at token {at} of {len(prompt)} "
            f"({tokenizer.decode(prompt[at:at + 8])!r} vs {tokenizer.decode(full[at:at + 8])!r}). This happens when "
            "the answer's first characters merge with the end of the prompt (e.g. an answer starting with "
            "whitespace); strip the answer or fix the chat template")
    answer = full[len(prompt):]
    ends = [k for k, t in enumerate(answer) if t in stops]
    if ends:
        answer = answer[:ends[-1] + 1]
    elif tokenizer.eos_token_id is not None:
        answer = answer + [tokenizer.eos_token_id]
    if not answer:
        raise ValueError(f"example {index}: the answer renders to no tokens")
    weights = None
    if field_start_weight != 1.0 or untrained:
        weights = [0.0] * len(prompt) + [1.0] * len(answer)
    if field_start_weight != 1.0:
        for start in field_starts(tokenizer, full_text, len(prompt), index):
            for k in range(start, min(start + field_start_tokens, len(weights))):
                weights[k] = field_start_weight
    if untrained:
        for k in untrained_positions(tokenizer, full_text, messages[-1]["content"], untrained, len(prompt), index):
            if k < len(weights):
                weights[k] = 0.0
    return Encoded(prompt + answer, [IGNORE] * len(prompt) + answer, weights)


def _offsets(tokenizer: Any, full_text: str, needed_by: str) -> list[tuple[int, int]]:
    """Character offsets of each token of `full_text`, tokenized as `_tokenize_text` does."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{needed_by} needs a fast tokenizer (character offsets); this one has none")
    bos = tokenizer.bos_token
    return tokenizer(full_text, add_special_tokens=not (bos and full_text.startswith(bos)),
                     return_offsets_mapping=True)["offset_mapping"]


def untrained_positions(tokenizer: Any, full_text: str, answer: str, spans: Spans, prompt_len: int,
                        index: int = 0) -> list[int]:
    """Positions, in the ids of `full_text`, of the tokens that overlap a character span of `answer`."""
    offsets = _offsets(tokenizer, full_text, "untrained spans")
    at = full_text.rfind(answer)
    if at < 0:
        raise ValueError(f"example {index}: the chat template changed the answer text, so its untrained spans "
                         "cannot be placed")
    return [k for k in range(prompt_len, len(offsets))
            if any(offsets[k][0] < at + end and at + start < offsets[k][1] for start, end in spans)]


def field_starts(tokenizer: Any, full_text: str, prompt_len: int, index: int = 0) -> list[int]:
    """Positions, in the ids of `full_text`, of the token that starts each output field's value in the
    answer: the token after a DSPy `[[ ## field ## ]]` marker line (the `completed` marker excluded).
    There a chain-of-thought trace commits to its approach and its answer. An answer without markers
    (plain text, such as an arithmetic drill) has none."""
    offsets = _offsets(tokenizer, full_text, "field_start_weight")
    answer_from = offsets[prompt_len][0] if prompt_len < len(offsets) else len(full_text)
    positions = []
    for m in FIELD_MARKER.finditer(full_text, answer_from):
        if m.group(1) == "completed":
            continue
        k = next((k for k in range(prompt_len, len(offsets)) if offsets[k][0] <= m.end() < offsets[k][1]), None)
        if k is not None:
            positions.append(k)
    return positions


def encode_examples(tokenizer: Any, conversations: list[list[dict[str, str]]], stops: set[int], max_length: int,
                    overlong: str = "truncate", field_start_weight: float = 1.0,
                    field_start_tokens: int = 1, untrained: Sequence[Spans] | None = None) -> EncodedSet:
    """Encode every conversation; one longer than `max_length` is cut (if any answer token is left) or dropped."""
    out, truncated, dropped = [], 0, 0
    for i, messages in enumerate(conversations):
        enc = encode_example(tokenizer, messages, stops, i, field_start_weight, field_start_tokens,
                             untrained[i] if untrained is not None else ())
        if len(enc) > max_length:
            keeps_answer = any(lab != IGNORE for lab in enc.labels[1:max_length])
            if overlong == "drop" or not keeps_answer:
                dropped += 1
                continue
            enc = enc.cut(max_length)
            truncated += 1
        out.append(enc)
    if not out:
        raise ValueError(f"all {len(conversations)} examples are longer than max_length={max_length} tokens "
                         f"(overlong={overlong!r}); raise max_length or shorten the prompts")
    if field_start_weight != 1.0 and not any(w == field_start_weight for enc in out for w in enc.weights or ()):
        raise ValueError(f"field_start_weight={field_start_weight} is set but none of the {len(out)} answers has a "
                         "DSPy field marker ([[ ## name ## ]]) to weight; leave it at 1 for plain chat data")
    return EncodedSet(out, truncated, dropped)


# -- batches -------------------------------------------------------------------------------------


def epoch_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int, bucket: bool = True) -> list[list[int]]:
    """Example indices of each batch of `epoch`, a pure function of (seed, epoch), so resume replays it.

    Bucketing sorts each window of `BUCKET_BATCHES` batches by length before cutting it into batches,
    then shuffles the batch order: batches hold similar lengths (little padding) yet every epoch sees a
    fresh mix. Only the last batch of an epoch can be short.
    """
    gen = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % (1 << 63))
    perm = torch.randperm(len(lengths), generator=gen).tolist()
    if not bucket:
        return [perm[i:i + batch_size] for i in range(0, len(perm), batch_size)]
    window = batch_size * BUCKET_BATCHES
    batches = []
    for start in range(0, len(perm), window):
        part = sorted(perm[start:start + window], key=lambda j: lengths[j])
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    order = torch.randperm(len(batches), generator=gen).tolist()
    return [batches[k] for k in order]


def batch_stream(lengths: Sequence[int], batch_size: int, seed: int, bucket: bool, epoch: int = 0,
                 position: int = 0) -> Iterator[tuple[int, int, list[int]]]:
    """`(epoch, index, batch)` forever, starting at batch `position` of `epoch`."""
    while True:
        batches = epoch_batches(lengths, batch_size, seed, epoch, bucket)
        for i in range(position, len(batches)):
            yield epoch, i, batches[i]
        epoch, position = epoch + 1, 0


def batches_per_epoch(n_examples: int, batch_size: int) -> int:
    return math.ceil(n_examples / batch_size)


def collate(examples: Sequence[Encoded], pad_id: int) -> dict[str, Tensor]:
    """Right-padded `input_ids`, `attention_mask` and `labels`, all `[batch, longest]`, and `weights`
    (float, 0 where unlabelled) when any example carries weights."""
    width = max(len(e) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    if any(e.weights is not None for e in examples):
        weights = (labels != IGNORE).float()
        for row, e in enumerate(examples):
            if e.weights is not None:
                weights[row, :len(e)] = torch.tensor(e.weights)
        batch["weights"] = weights
    return batch


def label_weight(batch: Mapping[str, Tensor]) -> float:
    """What a batch's loss sums over: its labelled tokens, each counted with its weight."""
    if "weights" in batch:
        return float(batch["weights"][:, 1:].sum())
    return float((batch["labels"][:, 1:] != IGNORE).sum())


# -- the loss ------------------------------------------------------------------------------------


def fast_path_supported(model: nn.Module) -> bool:
    """Whether `labelled_loss` computes this model's logits exactly: no logit soft-capping or scaling
    after the LM head, and a separate body and head to call."""
    config = getattr(model, "config", None)
    for attr in ("final_logit_softcapping", "logit_scale", "logits_scaling"):
        value = getattr(config, attr, None)
        if value not in (None, 1, 1.0):
            return False
    return _body_and_head(model) is not None


def _body_and_head(model: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    """The transformer body (returning final normed hidden states) and the LM head of a causal LM."""
    try:
        body, head = model.get_decoder(), model.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    if body is None or head is None or body is model:
        return None
    return body, head


def labelled_loss(model: nn.Module, batch: Mapping[str, Tensor]) -> Tensor:
    """Summed (weighted, given `weights`) next-token cross-entropy over the labelled positions, the LM
    head run on those only.

    `model` is the causal LM (e.g. a PEFT model's `base_model.model`); the result equals
    `reference_loss` up to float rounding.
    """
    body, head = _body_and_head(model)  # type: ignore[misc]
    mask = batch["attention_mask"]
    hidden = body(input_ids=batch["input_ids"], attention_mask=None if bool(mask.all()) else mask,
                  use_cache=False).last_hidden_state  # [batch, seq, d_model]
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE
    logits = head(hidden[:, :-1][keep])  # [n_labelled, vocab]
    if "weights" not in batch:
        return F.cross_entropy(logits.float(), targets[keep], reduction="sum")
    losses = F.cross_entropy(logits.float(), targets[keep], reduction="none")
    return (losses * batch["weights"][:, 1:][keep]).sum()


def reference_loss(model: nn.Module, batch: Mapping[str, Tensor]) -> Tensor:
    """The same sum over the model's full-sequence logits (the plain path, for any causal LM)."""
    mask = batch["attention_mask"]
    logits = model(input_ids=batch["input_ids"], attention_mask=None if bool(mask.all()) else mask,
                   use_cache=False).logits  # [batch, seq, vocab]
    losses = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), batch["labels"][:, 1:].flatten(),
                             ignore_index=IGNORE, reduction="none")
    if "weights" in batch:
        losses = losses * batch["weights"][:, 1:].flatten()
    return losses.sum()
