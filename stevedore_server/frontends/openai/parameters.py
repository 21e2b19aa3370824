"""The bodies of the OpenAI-compatible routes, checked and turned into what the inference core takes.

Each route's body is checked against a JSON Schema of our own; the first problem is an ``InvalidParameter``
naming the parameter (OpenAI's ``param``). A key no route knows is refused as OpenAI refuses it
("Unrecognized request argument supplied: X"), and so is what the server does not do (log probabilities,
``echo``, ``best_of``, ``suffix``, audio, token ids as prompts). What the model is handed (``params``) is what the
request gave, a null being not given: ``max_completion_tokens`` as ``max_tokens``, ``stop`` as a list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stevedore_server.base.errors import BadRequest, InvalidParameter
from stevedore_server.base.validation import SchemaValidator
from stevedore_server.core.inference import ModelRef
from stevedore_server.core.text import DECLARED_PARAMETERS

#: Parameters handed to the model as they are: OpenAI's sampling and bookkeeping ones, and vLLM's.
PASSED_THROUGH = (
    "temperature", "top_p", "seed", "user", "presence_penalty", "frequency_penalty", "logit_bias", "metadata",
    "top_k", "min_p", "repetition_penalty",
)  # fmt: skip
#: Passed to a model declaring ``tools`` or ``response_format`` (``core.text`` refuses them to others).
DECLARED = tuple(name for names in DECLARED_PARAMETERS.values() for name in names)
#: Stop sequences at most, as OpenAI allows.
MAX_STOPS = 4
#: Choices a request may ask at most (``n``): each is a call of the model.
MAX_CHOICES = 8
#: Texts an embeddings request may hold at most (OpenAI's bound).
MAX_INPUTS = 2048
#: Prompts a completions request may hold at most: each is a generation (``n`` of them), so few; a model's
#: bound may take fewer still (``core.text`` refuses what never fits).
MAX_PROMPTS = 64

NULLABLE_NUMBER = {"type": ["number", "null"]}
SAMPLING = {
    "model": {"type": "string", "minLength": 1},
    "stream": {"type": ["boolean", "null"]},
    "stream_options": {
        "type": ["object", "null"],
        # ``include_obfuscation`` (OpenAI's padding of chunks against length side channels) asks for nothing here.
        "properties": {"include_usage": {"type": "boolean"}, "include_obfuscation": {"type": "boolean"}},
        "additionalProperties": False,
    },
    "n": {"type": ["integer", "null"], "minimum": 1, "maximum": MAX_CHOICES},
    "max_tokens": {"type": ["integer", "null"], "minimum": 1},
    "stop": {
        "anyOf": [
            {"type": "string"},
            {"type": "array", "items": {"type": "string"}, "maxItems": MAX_STOPS},
            {"type": "null"},
        ]
    },
    "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": 2},
    "top_p": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
    "seed": {"type": ["integer", "null"]},
    "user": {"type": ["string", "null"]},
    "presence_penalty": {"type": ["number", "null"], "minimum": -2, "maximum": 2},
    "frequency_penalty": {"type": ["number", "null"], "minimum": -2, "maximum": 2},
    "logit_bias": {"type": ["object", "null"], "additionalProperties": {"type": "number"}},
    "metadata": {"type": ["object", "null"], "additionalProperties": {"type": "string"}},
    "top_k": {"type": ["integer", "null"]},
    "min_p": NULLABLE_NUMBER,
    "repetition_penalty": NULLABLE_NUMBER,
    "tools": {"type": ["array", "null"], "items": {"type": "object", "required": ["type"]}},
    "tool_choice": {"type": ["string", "object", "null"]},
    "parallel_tool_calls": {"type": ["boolean", "null"]},
    "response_format": {"type": ["object", "null"], "required": ["type"]},
    # Known, refused unless they ask for nothing (``refused``).
    "logprobs": {},
    "top_logprobs": {},
    "audio": {},
    "modalities": {},
    "echo": {},
    "best_of": {},
    "suffix": {},
}
PART = {"type": "object", "required": ["type"], "properties": {"type": {"type": "string"}}}
MESSAGE = {
    "type": "object",
    "required": ["role"],
    "properties": {
        "role": {"enum": ["system", "developer", "user", "assistant", "tool", "function"]},
        "content": {"anyOf": [{"type": "string"}, {"type": "null"}, {"type": "array", "items": PART}]},
        "name": {"type": "string"},
        "tool_calls": {"type": ["array", "null"]},
        "tool_call_id": {"type": "string"},
    },
}
CHAT_SCHEMA = {
    "type": "object",
    "required": ["model", "messages"],
    "properties": {
        **SAMPLING,
        "messages": {"type": "array", "minItems": 1, "items": MESSAGE},
        "max_completion_tokens": {"type": ["integer", "null"], "minimum": 1},
    },
}
PROMPTS = {
    "anyOf": [
        {"type": "string"},
        {"type": "array", "minItems": 1, "maxItems": MAX_PROMPTS, "items": {"type": "string"}},
    ]
}
COMPLETION_SCHEMA = {
    "type": "object",
    "required": ["model", "prompt"],
    "properties": {**SAMPLING, "prompt": PROMPTS},
}
#: What embeddings take: texts that are not empty (as OpenAI refuses them).
INPUTS = {
    "anyOf": [
        {"type": "string", "minLength": 1},
        {"type": "array", "minItems": 1, "maxItems": MAX_INPUTS, "items": {"type": "string", "minLength": 1}},
    ]
}
EMBEDDING_SCHEMA = {
    "type": "object",
    "required": ["model", "input"],
    "properties": {
        "model": SAMPLING["model"],
        "input": INPUTS,
        "encoding_format": {"enum": ["float", "base64", None]},
        "dimensions": {"type": ["integer", "null"], "minimum": 1},
        "user": SAMPLING["user"],
    },
}
VALIDATORS = {
    "chat": SchemaValidator(CHAT_SCHEMA),
    "complete": SchemaValidator(COMPLETION_SCHEMA),
    "embed": SchemaValidator(EMBEDDING_SCHEMA),
}
#: Where the texts are in each route's body.
TEXT_KEYS = {"chat": "messages", "complete": "prompt", "embed": "input"}
#: Content parts of a chat message that are text.
TEXT_PARTS = ("text", "refusal")


@dataclass(frozen=True)
class Generating:
    """A chat or completions request: ``inputs`` are the messages (one list, chat) or the prompts (completions,
    ``n`` choices each); ``params`` what the model is handed."""

    ref: ModelRef
    model: str
    capability: str
    inputs: list[Any]
    params: dict[str, Any]
    n: int
    stream: bool
    include_usage: bool
    stop: tuple[str, ...]


@dataclass(frozen=True)
class Embedding:
    ref: ModelRef
    model: str
    texts: list[str]
    params: dict[str, Any]
    base64: bool


def model_ref(model: str) -> ModelRef:
    """``name`` or ``name:version`` (a model's names and versions hold no colon)."""
    name, _, version = model.partition(":")
    return ModelRef(name, version or None)


def checked(capability: str, body: Any) -> dict[str, Any]:
    """``body`` checked against the route's schema: BadRequest for one that is not an object, InvalidParameter
    naming the first wrong or unknown parameter."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    validator = VALIDATORS[capability]
    unknown = [key for key in body if key not in validator.schema["properties"]]
    if unknown:
        raise InvalidParameter(f"Unrecognized request argument supplied: {unknown[0]}", unknown[0])
    token_ids(capability, body.get(TEXT_KEYS[capability]))
    details = validator.errors(body)
    if details:
        first = details[0]
        raise InvalidParameter(f"{param_of(first['path']) or 'the body'}: {first['message']}", param_of(first["path"]))
    return {key: value for key, value in body.items() if value is not None}


def param_of(pointer: str) -> str | None:
    """A JSON pointer as OpenAI names a parameter: ``/messages/0/role`` is ``messages[0].role``."""
    name = ""
    for part in pointer.split("/")[1:]:
        name += f"[{part}]" if part.isdigit() else (f".{part}" if name else part)
    return name or None


def token_ids(capability: str, texts: Any) -> None:
    """InvalidParameter for token ids given as a prompt or input (integers, or lists of them)."""
    if capability == "chat" or not isinstance(texts, list):
        return
    if any(isinstance(item, (int, list)) for item in texts):
        raise InvalidParameter(
            f"token ids as {TEXT_KEYS[capability]} are not supported: send text", TEXT_KEYS[capability]
        )


def refused(body: dict[str, Any]) -> None:
    """InvalidParameter for what the server does not do, unless the value asks for nothing."""
    nothing: dict[str, Any] = {"logprobs": (False, 0), "echo": (False,), "best_of": (1,), "modalities": (["text"],)}
    for key in ("logprobs", "top_logprobs", "audio", "modalities", "echo", "best_of", "suffix"):
        if key in body and body[key] not in nothing.get(key, ()):
            raise InvalidParameter(f"{key} is not supported by this server", key)


def generating(capability: str, body: Any) -> Generating:
    """A chat (``capability`` "chat") or completions ("complete") request's body, checked."""
    given = checked(capability, body)
    refused(given)
    if "stream_options" in given and not given.get("stream"):
        raise InvalidParameter("stream_options is only allowed when stream is true", "stream_options")
    if capability == "chat":
        text_only(given["messages"])
    stop = given.get("stop", [])
    stops = [stop] if isinstance(stop, str) else list(stop)
    params: dict[str, Any] = {key: given[key] for key in (*PASSED_THROUGH, *DECLARED) if key in given}
    max_tokens = given.get("max_completion_tokens", given.get("max_tokens"))
    if max_tokens is not None:
        params["max_tokens"] = max_tokens
    if "stop" in given:
        params["stop"] = stops
    n = given.get("n", 1)
    params.update(n=n, stream=given.get("stream", False))
    prompt = given.get("prompt", "")
    inputs: list[Any] = (
        [given["messages"]] if capability == "chat" else [prompt] if isinstance(prompt, str) else list(prompt)
    )
    return Generating(
        ref=model_ref(given["model"]), model=given["model"], capability=capability, inputs=inputs, params=params,
        n=n, stream=given.get("stream", False), stop=tuple(stop for stop in stops if stop),
        include_usage=given.get("stream_options", {}).get("include_usage", False),
    )  # fmt: skip


def text_only(messages: list[dict[str, Any]]) -> None:
    """InvalidParameter for a content part that is not text (an image, audio, a file)."""
    for index, message in enumerate(messages):
        content = message.get("content")
        for number, part in enumerate(content if isinstance(content, list) else []):
            where = f"messages[{index}].content[{number}]"
            if part["type"] not in TEXT_PARTS:
                raise InvalidParameter(f"{where}: only text content is supported, not {part['type']!r}", where)
            if not isinstance(part.get(part["type"]), str):  # {"type": "text", "text": ...}, and so for a refusal
                raise InvalidParameter(f"{where}: a {part['type']} part needs its {part['type']} as a string", where)


def embedding(body: Any) -> Embedding:
    """An embeddings request's body, checked."""
    given = checked("embed", body)
    texts = given["input"]
    params: dict[str, Any] = {key: given[key] for key in ("dimensions", "user") if key in given}
    return Embedding(
        model_ref(given["model"]),
        given["model"],
        [texts] if isinstance(texts, str) else texts,
        params,
        given.get("encoding_format") == "base64",
    )


def message_words(messages: list[dict[str, Any]]) -> int:
    """The words of a chat's messages (their text), the prompt's count where the model gives none."""
    return sum(words(text) for message in messages for text in message_texts(message))


def message_texts(message: dict[str, Any]) -> list[str]:
    content = message.get("content")
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [part.get("text", "") for part in content if isinstance(part.get("text"), str)]
    return []


def words(text: str) -> int:
    """How the server counts tokens where the model does not: whitespace-separated words."""
    return len(text.split())
