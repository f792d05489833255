"""The HTTP request bodies the server accepts and the error body it answers with, as OpenAI shapes them."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, Literal, Optional, Union

from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from ..errors import DriftError
from ..params import Sampling
from ..steer.grammar import schema_grammar


Number = Union[StrictFloat, StrictInt]


class Body(BaseModel):
    """A part of a request: fields it does not know are kept, to be refused by name (unsupported())."""
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def unsupported(self, at: str = "") -> Optional[str]:
        """The first field given (not null) that drift-cpp does not honour, as a dotted path; None if none."""
        for name, value in (self.model_extra or {}).items():
            if value is not None:
                return at + name
        for name in type(self).model_fields:
            value = getattr(self, name)
            for i, part in enumerate(value if isinstance(value, list) else [value]):
                if isinstance(part, Body):
                    found = part.unsupported(f"{at}{name}[{i}]." if isinstance(value, list) else f"{at}{name}.")
                    if found:
                        return found
        return None


class Message(Body):
    role: Literal["system", "user", "assistant"]
    content: StrictStr


class JsonSchema(Body):
    name: Optional[StrictStr] = None
    description: Optional[StrictStr] = None
    schema_: Optional[dict[str, Any]] = Field(None, alias="schema")
    strict: Optional[StrictBool] = None


class ResponseFormat(Body):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: Optional[JsonSchema] = None
    schema_: Optional[dict[str, Any]] = Field(None, alias="schema")  # llama-cpp-python's json_object with a schema


class StreamOptions(Body):
    include_usage: Optional[StrictBool] = None


class ChatRequest(Body):
    """The OpenAI fields drift-cpp honours; any other field given is refused by name (a 400), never ignored."""
    model: StrictStr
    messages: list[Message] = Field(min_length=1)
    max_tokens: Optional[StrictInt] = None
    max_completion_tokens: Optional[StrictInt] = None
    temperature: Optional[Number] = None
    top_p: Optional[Number] = None
    frequency_penalty: Optional[Number] = None
    presence_penalty: Optional[Number] = None
    seed: Optional[StrictInt] = None
    stop: Union[StrictStr, list[StrictStr], None] = None
    stream: StrictBool = False
    stream_options: Optional[StreamOptions] = None
    n: Optional[StrictInt] = None
    logit_bias: Optional[dict[str, Number]] = None  # token id -> bias in [-100, 100]
    response_format: Optional[ResponseFormat] = None
    user: Optional[StrictStr] = None
    # drift-cpp's own, in the client's extra body: the strength and the guard of the user's steering
    beta: Optional[Number] = None
    plausibility: Optional[Number] = None
    max_kl: Optional[Number] = None

    def sampling(self) -> Sampling:
        """Sampling's defaults for what the request leaves out; Sampling.check judges the values."""
        given = {"max_tokens": self.max_completion_tokens if self.max_completion_tokens is not None
                 else self.max_tokens, "temperature": self.temperature, "top_p": self.top_p, "seed": self.seed,
                 "frequency_penalty": self.frequency_penalty, "presence_penalty": self.presence_penalty,
                 "stop": (self.stop,) if isinstance(self.stop, str) else None if self.stop is None else tuple(self.stop),
                 "logit_bias": self._logit_bias(), "grammar": self._grammar()}
        sampling = replace(Sampling(), **{k: v for k, v in given.items() if v is not None})
        sampling.check()
        return sampling

    def _logit_bias(self) -> Optional[tuple]:
        if self.logit_bias is None:
            return None
        for key in self.logit_bias:
            if not key.isdigit():
                raise ApiError(400, f"logit_bias: the key {key!r} is no token id", "logit_bias")
        return tuple((int(key), float(value)) for key, value in self.logit_bias.items())

    def _grammar(self) -> Optional[str]:
        """The GBNF of the response_format (steer/grammar.py); None for text."""
        rf = self.response_format
        if rf is None or rf.type == "text":
            return None
        if rf.type == "json_schema" and (rf.json_schema is None or rf.json_schema.schema_ is None):
            raise ApiError(400, "response_format: a json_schema needs json_schema.schema", "response_format")
        try:
            return schema_grammar(rf.json_schema.schema_ if rf.type == "json_schema" else rf.schema_)
        except DriftError as e:
            raise ApiError(400, f"response_format: {e}", "response_format") from None


class PreferenceItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: StrictStr
    prompt: Union[StrictStr, list[dict]]
    chosen: Union[StrictStr, list[dict]]
    rejected: Union[StrictStr, list[dict]]
    id: Optional[StrictStr] = None


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: Optional[str] = None, code: Optional[str] = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def response(self) -> Response:
        # ASCII JSON: a name echoed from the request (a model, a field) may hold a lone surrogate, which
        # UTF-8 cannot carry.
        return Response(json.dumps({"error": {"message": self.message, "type": self.kind, "param": self.param,
                                              "code": self.code}}), self.status, media_type="application/json")
