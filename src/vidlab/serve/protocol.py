"""The wire format: OpenAI's chat completion request, response, stream chunk and model list.

Request fields beyond OpenAI's are the ones vLLM clients send for video: `mm_processor_kwargs`,
`media_io_kwargs`, `top_k`, `min_tokens`, `repetition_penalty`, `ignore_eos`, and on a content part
`uuid` (and vidlab's `start` / `end` clip window). Fields that change what OpenAI or vLLM would answer
but that vidlab cannot honour (tools, logprobs, n > 1, penalties, guided decoding, ...) are refused
by name rather than silently ignored; other unknown fields are ignored, as OpenAI's own SDKs add some.
Types are JSON's own: `true` is not a number and `"yes"` is not a boolean.
"""

from __future__ import annotations

import time
import uuid as uuid_module
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError

from vidlab.serve.errors import ServeError
from vidlab.settings import describe_errors

# Field -> the value that means "not asked for"; any other value is refused by name (OpenAI's and vLLM's
# fields that would change the answer, which vidlab cannot honour: never ignored silently).
_UNSUPPORTED = {
    "n": 1, "tools": None, "tool_choice": None, "functions": None, "function_call": None, "logprobs": False,
    "top_logprobs": None, "logit_bias": None, "presence_penalty": 0, "frequency_penalty": 0, "audio": None,
    "prediction": None, "modalities": None, "web_search_options": None, "reasoning_effort": None,
    "guided_json": None, "guided_regex": None, "guided_choice": None, "guided_grammar": None,
    "guided_decoding_backend": None, "guided_whitespace_pattern": None, "structured_outputs": None,
    "best_of": None, "use_beam_search": False, "length_penalty": 1, "min_p": 0, "prompt_logprobs": None,
    "allowed_token_ids": None, "bad_words": None, "stop_token_ids": None, "include_stop_str_in_output": False,
    "skip_special_tokens": True, "spaces_between_special_tokens": True, "truncate_prompt_tokens": None,
    "echo": False, "add_generation_prompt": True, "continue_final_message": False, "chat_template": None,
    "chat_template_kwargs": None, "documents": None, "logits_processors": None, "vllm_xargs": None,
}
MAX_STOP_STRINGS = 16
_UNION_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}
SEED_RANGE = (-(1 << 63), (1 << 64) - 1)  # what torch.manual_seed takes


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: StrictBool = False


# JSON's types as they are: `true` is not 1, "yes" is not true, "2" is not 2 (a number may be written 2 or 2.0).
Number = StrictFloat


class ChatRequest(BaseModel):
    """POST /v1/chat/completions. A field that is not given means the server's default."""

    model_config = ConfigDict(extra="allow", frozen=True)

    model: StrictStr | None = None
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_tokens: StrictInt | None = Field(None, ge=1)
    max_completion_tokens: StrictInt | None = Field(None, ge=1)
    temperature: Number | None = None
    top_p: Number | None = None
    top_k: StrictInt | None = Field(None, ge=-1)
    min_tokens: StrictInt | None = Field(None, ge=0)
    repetition_penalty: Number | None = Field(None, gt=0)
    ignore_eos: StrictBool | None = None
    stop: StrictStr | list[StrictStr] | None = None
    seed: StrictInt | None = Field(None, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    mm_processor_kwargs: dict[str, Any] | None = None
    media_io_kwargs: dict[str, dict[str, Any]] | None = None
    response_format: dict[str, Any] | None = None

    @property
    def stop_strings(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


def parse_request(body: Any) -> ChatRequest:
    """The request body as a ChatRequest.

    Raises:
        ServeError: 400 naming the field and what it must be.
    """
    if not isinstance(body, dict):
        raise ServeError(400, f"the request body must be a JSON object, got {type(body).__name__}.",
                         code="invalid_json")
    for field, neutral in _UNSUPPORTED.items():
        if body.get(field, neutral) not in (neutral, None):
            raise ServeError(
                400, f"{field}: not supported by vidlab serve (got {body[field]!r}). Leave it out.",
                code="unsupported_parameter", param=field,
            )
    try:
        request = ChatRequest.model_validate(body)
    except ValidationError as err:
        first = err.errors()[0]
        # the field's path, without the names pydantic gives the members of a union (`stop.list[str].1` -> `stop.1`)
        param = ".".join(str(part) for part in first["loc"] if part not in _UNION_TAGS and "[" not in str(part)) \
            or None
        raise ServeError(400, "; ".join(describe_errors(err)) + ". Fix the request.", code="invalid_value",
                         param=param) from None
    fmt = (request.response_format or {}).get("type", "text")
    if fmt != "text":
        raise ServeError(400, f"response_format: only type text is supported (got {fmt!r}). Leave it out.",
                         code="unsupported_parameter", param="response_format")
    if len(request.stop_strings) > MAX_STOP_STRINGS or any(not s for s in request.stop_strings):
        raise ServeError(400, f"stop: give at most {MAX_STOP_STRINGS} non-empty strings.", code="invalid_value",
                         param="stop")
    return request


def new_id() -> str:
    return f"chatcmpl-{uuid_module.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion(
    request_id: str, model: str, fingerprint: str, text: str, finish_reason: str, used: dict, extra: dict
) -> dict:
    """A `chat.completion` object; `extra` (frames, visual tokens, batch size, warnings) goes under `vidlab`."""
    return {
        "id": request_id, "object": "chat.completion", "created": int(time.time()), "model": model,
        "system_fingerprint": fingerprint,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                     "finish_reason": finish_reason}],
        "usage": used, "vidlab": extra,
    }




def chunk(
    request_id: str, model: str, fingerprint: str, created: int, delta: dict | None = None,
    finish_reason: str | None = None, used: dict | None = None, extra: dict | None = None,
) -> dict:
    """A `chat.completion.chunk`: a delta, the finish (empty delta and a reason), or the usage (no choices)."""
    body: dict[str, Any] = {"id": request_id, "object": "chat.completion.chunk", "created": created, "model": model,
                            "system_fingerprint": fingerprint}
    if used is not None:
        body["choices"] = []
        body["usage"] = used
    else:
        body["choices"] = [{"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish_reason}]
    if extra is not None:
        body["vidlab"] = extra
    return body


def model_list(base: str, adapters: list[str]) -> dict:
    """GET /v1/models: the base model, then each adapter (its `parent` is the base, as in vLLM)."""
    created = int(time.time())
    data = [{"id": base, "object": "model", "created": created, "owned_by": "vidlab", "root": base, "parent": None}]
    data += [{"id": name, "object": "model", "created": created, "owned_by": "vidlab", "root": base, "parent": base}
             for name in adapters]
    return {"object": "list", "data": data}
