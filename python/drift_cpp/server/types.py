"""The HTTP request bodies the server accepts and the error body it answers with, as OpenAI shapes them."""

from __future__ import annotations

from dataclasses import replace
from typing import Literal, Optional, Union

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from ..params import Sampling


Number = Union[StrictFloat, StrictInt]


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant"]
    content: StrictStr


class ChatRequest(BaseModel):
    """The OpenAI fields drift-cpp honours; others (n=1, stream_options, ...) are accepted and ignored."""
    model_config = ConfigDict(extra="ignore")
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
    n: Literal[1] = 1
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
                 "stop": (self.stop,) if isinstance(self.stop, str) else None if self.stop is None else tuple(self.stop)}
        sampling = replace(Sampling(), **{k: v for k, v in given.items() if v is not None})
        sampling.check()
        return sampling


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

    def response(self) -> JSONResponse:
        return JSONResponse({"error": {"message": self.message, "type": self.kind, "param": self.param,
                                       "code": self.code}}, status_code=self.status)
