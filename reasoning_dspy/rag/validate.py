"""Prompt validation: non-empty, within the model's token limit, every template field present.

`PromptRules` (pydantic) says what a valid prompt is for one template; `PromptValidator` adds the
tokenizer that counts tokens and the model's context length, and turns a text into a `Prompt` (a
pydantic model whose validators apply the rules) or raises `InvalidPrompt` with one clear sentence
per problem: what was given, what was expected.

Fields are written as `{name}` placeholders (`{{name}}` is a literal brace, as in `str.format`).
A DSPy signature's fields are its input fields; DSPy's adapters format those inputs themselves, so
instructions for a DSPy program need no placeholders unless you ask for them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

_PLACEHOLDER = re.compile(r"(?<!\{)\{([A-Za-z_][A-Za-z0-9_]*)\}(?!\})")

#: `tokenizer.model_max_length` above this is transformers' "no limit set" sentinel, not a context.
_NO_LIMIT = 1_000_000


class InvalidPrompt(ValueError):
    """A prompt broke the rules; `problems` lists each one, the message joins them."""

    def __init__(self, text: str, problems: list[str]):
        self.text, self.problems = text, problems
        super().__init__(f"invalid prompt {_short(text)}: {'; '.join(problems)}")


def placeholders(text: str) -> tuple[str, ...]:
    """The `{name}` fields of a template, each once, in order of first use."""
    return tuple(dict.fromkeys(_PLACEHOLDER.findall(text)))


def template_fields(template: Any) -> tuple[str, ...]:
    """The fields a template requires: a string's `{name}` placeholders, a DSPy signature's input
    fields (a `Signature` class or instance, or a `dspy.Predict` holding one), or a list of names."""
    if isinstance(template, str):
        return placeholders(template)
    for signature in (template, getattr(template, "signature", None)):  # a Signature, or a Predict's
        if hasattr(signature, "input_fields"):
            return tuple(signature.input_fields)
    if isinstance(template, Iterable):
        return tuple(template)
    raise TypeError(f"a template is a string with {{field}} placeholders, a DSPy signature or a list of field "
                    f"names, got {type(template).__name__}")


class PromptRules(BaseModel):
    """What a valid prompt is, for one template and one model: the Python API and the saved form."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_tokens: int | None = Field(None, gt=0, description="token limit; None: the model's context length")
    required_fields: tuple[str, ...] = Field((), description="placeholders every prompt must contain, as {name}")
    allowed_fields: tuple[str, ...] | None = Field(
        None, description="the only placeholders a prompt may use (None: any); a typo such as {qestion} is caught")

    @field_validator("required_fields", "allowed_fields")
    @classmethod
    def _names(cls, names: tuple[str, ...] | None) -> tuple[str, ...] | None:
        bad = [n for n in names or () if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", n)]
        if bad:
            raise ValueError(f"field names must be identifiers such as 'question', got {bad!r}")
        return names

    @model_validator(mode="after")
    def _required_are_allowed(self) -> PromptRules:
        if self.allowed_fields is not None and not set(self.required_fields) <= set(self.allowed_fields):
            extra = sorted(set(self.required_fields) - set(self.allowed_fields))
            raise ValueError(f"required fields {extra} are not among allowed_fields {list(self.allowed_fields)}")
        return self

    @classmethod
    def for_template(cls, template: Any, *, max_tokens: int | None = None) -> PromptRules:
        """Rules under which a prompt must use exactly `template`'s fields (see `template_fields`)."""
        fields = template_fields(template)
        return cls(max_tokens=max_tokens, required_fields=fields, allowed_fields=fields)


class Prompt(BaseModel):
    """A prompt that passed validation: its text, its token count and the fields it uses.

    Build one with `PromptValidator.validate`; the rules and the limit come in the validation
    context, so `Prompt.model_validate(data, context=...)` applies them too."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    text: str
    n_tokens: int | None = Field(None, ge=0, description="tokens of the text alone (None: no tokenizer)")
    fields: tuple[str, ...] = Field((), description="its {name} placeholders")

    @field_validator("text")
    @classmethod
    def _not_empty(cls, text: str) -> str:
        if not text.strip():
            raise ValueError("the prompt is empty" if not text else "the prompt is only whitespace")
        return text

    @model_validator(mode="after")
    def _rules(self, info: ValidationInfo) -> Prompt:
        context = info.context or {}
        rules: PromptRules = context.get("rules") or PromptRules()
        limit, limit_source = context.get("limit"), context.get("limit_source", "the limit")
        problems = []
        if limit is not None and self.n_tokens is not None and self.n_tokens > limit:
            fix = "shorten it or raise max_tokens" if limit_source.startswith("max_tokens") else "shorten it"
            problems.append(f"{self.n_tokens:,} tokens{context.get('counted_with', '')}, over the limit of "
                            f"{limit:,} ({limit_source}): {fix}")
        missing = [f for f in rules.required_fields if f not in self.fields]
        if missing:
            problems.append(f"missing field{'s' if len(missing) > 1 else ''} {_braced(missing)} "
                            f"(the template needs {_braced(rules.required_fields)})")
        if rules.allowed_fields is not None:
            unknown = [f for f in self.fields if f not in rules.allowed_fields]
            if unknown:
                problems.append(f"unknown field{'s' if len(unknown) > 1 else ''} {_braced(unknown)} (the template "
                                f"fills only {_braced(rules.allowed_fields) or 'no fields'})")
        if problems:
            raise ValueError("\n".join(problems))  # one problem a line: `InvalidPrompt.problems`
        return self


class PromptValidator:
    """Validate prompts for one model: count tokens with its tokenizer, cap them at its context
    length (or `rules.max_tokens`, whichever is smaller), and check the template's fields.

    >>> validator = PromptValidator.for_model(load_model("tiny-random"), rules=PromptRules(max_tokens=256))
    >>> validator.validate("Think step by step.").n_tokens
    """

    def __init__(self, tokenizer: Any = None, *, rules: PromptRules | None = None,
                 context_length: int | None = None, model_name: str | None = None):
        self.rules = rules or PromptRules()
        if self.rules.max_tokens is not None and tokenizer is None:
            raise ValueError(f"max_tokens={self.rules.max_tokens} needs a tokenizer to count tokens with: "
                             "PromptValidator(tokenizer, ...) or PromptValidator.for_model(loaded_model, ...)")
        if context_length is not None and context_length < 1:
            raise ValueError(f"context_length must be >= 1, got {context_length}")
        self.tokenizer = tokenizer
        self.model_name = model_name or (getattr(tokenizer, "name_or_path", None) or None)
        self.context_length = context_length if context_length is not None else _tokenizer_context(tokenizer)
        self.limit, self.limit_source = self._limit()

    @classmethod
    def for_model(cls, loaded: Any, *, rules: PromptRules | None = None) -> PromptValidator:
        """A validator for a `LoadedModel`: its tokenizer, its context length, its name in messages."""
        return cls(loaded.tokenizer, rules=rules, context_length=context_length(loaded),
                   model_name=loaded.model_spec.name)

    def count_tokens(self, text: str) -> int | None:
        """Tokens of `text` alone (no special tokens, no chat template); None without a tokenizer."""
        if self.tokenizer is None:
            return None
        return len(self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def validate(self, text: Any) -> Prompt:
        """The validated `Prompt`, or `InvalidPrompt` naming every problem."""
        if not isinstance(text, str):
            raise InvalidPrompt(repr(text), [f"a prompt is a string, got {type(text).__name__}"])
        data = {"text": text, "n_tokens": self.count_tokens(text) if text.strip() else None,
                "fields": placeholders(text)}
        counted_with = f" (counted with {self.model_name}'s tokenizer)" if self.model_name else ""
        context = {"rules": self.rules, "limit": self.limit, "limit_source": self.limit_source,
                   "counted_with": counted_with}
        try:
            return Prompt.model_validate(data, context=context)
        except ValidationError as err:
            raise InvalidPrompt(text, [line for e in err.errors() for line in _message(e).splitlines()]) from None

    def problems(self, text: Any) -> list[str]:
        """What is wrong with `text` (empty when it is valid)."""
        try:
            self.validate(text)
        except InvalidPrompt as err:
            return err.problems
        return []

    def _limit(self) -> tuple[int | None, str]:
        limits = []
        if self.rules.max_tokens is not None:
            limits.append((self.rules.max_tokens, f"max_tokens={self.rules.max_tokens}"))
        if self.context_length is not None and self.tokenizer is not None:
            name = f"{self.model_name}'s" if self.model_name else "the model's"
            limits.append((self.context_length, f"{name} context length"))
        return min(limits) if limits else (None, "no limit")


def context_length(loaded: Any) -> int | None:
    """A model's context length: its position embeddings (`max_position_embeddings`, `n_positions`),
    capped by its tokenizer's `model_max_length` when that is set."""
    config = getattr(getattr(loaded, "model", loaded), "config", None)
    positions = next((getattr(config, k) for k in ("max_position_embeddings", "n_positions", "n_ctx")
                      if isinstance(getattr(config, k, None), int)), None)
    limits = [x for x in (positions, _tokenizer_context(getattr(loaded, "tokenizer", None))) if x]
    return min(limits) if limits else None


def _tokenizer_context(tokenizer: Any) -> int | None:
    n = getattr(tokenizer, "model_max_length", None)
    return int(n) if isinstance(n, int) and 0 < n < _NO_LIMIT else None


def _message(error: dict) -> str:
    msg = str(error.get("msg", ""))
    return msg.removeprefix("Value error, ")


def _braced(names: Iterable[str]) -> str:
    return ", ".join(f"{{{n}}}" for n in names)


def _short(text: str, width: int = 60) -> str:
    return repr(text if len(text) <= width else text[: width - 3] + "...")
