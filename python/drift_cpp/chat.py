"""Chat prompts rendered with the template in the GGUF's metadata, as llama-cpp-python does.

A GGUF without a template (Gemma 3 270M is a base model) falls back to one of
llama.cpp's built-in templates, chosen by name (`--chat-template`).
"""

from __future__ import annotations

import ctypes
from typing import Iterable, Mapping, Sequence, Union

import llama_cpp
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from .errors import DriftError

MessageLike = Union[Mapping[str, str], Sequence[str]]


def as_messages(messages: Iterable[MessageLike]) -> list[dict]:
    """Accepts {"role", "content"} mappings, (role, content) pairs or objects with those attributes."""
    out = []
    for m in messages:
        if isinstance(m, Mapping):
            out.append({"role": m["role"], "content": m["content"]})
        elif hasattr(m, "role"):
            out.append({"role": m.role, "content": m.content})
        else:
            role, content = m
            out.append({"role": role, "content": content})
    return out


def builtin_templates() -> list[str]:
    n = llama_cpp.llama_chat_builtin_templates(None, 0)
    names = (ctypes.c_char_p * n)()
    llama_cpp.llama_chat_builtin_templates(names, n)
    return sorted(name.decode() for name in names)


class ChatTemplate:
    """Renders a conversation; `name` says which template it is ("gguf" or a built-in name)."""

    def __init__(self, name: str, jinja: str | None = None, bos_token: str = "", eos_token: str = ""):
        self.name = name
        self._formatter = None
        if jinja is not None:
            self._formatter = Jinja2ChatFormatter(template=jinja, eos_token=eos_token, bos_token=bos_token)
        elif name not in builtin_templates():
            raise DriftError(f"unknown chat template '{name}'; built-in ones: {', '.join(builtin_templates())}")

    def render(self, messages: Iterable[MessageLike], add_generation_prompt: bool = True) -> str:
        msgs = as_messages(messages)
        if self._formatter is not None:
            self._formatter.add_generation_prompt = add_generation_prompt
            return self._formatter(messages=msgs).prompt
        return _apply_builtin(self.name, msgs, add_generation_prompt)


def _apply_builtin(name: str, messages: list[dict], add_generation_prompt: bool) -> str:
    # Keep the encoded strings alive while llama.cpp reads them.
    encoded = [(m["role"].encode(), m["content"].encode()) for m in messages]
    chat = (llama_cpp.llama_chat_message * len(encoded))(
        *[llama_cpp.llama_chat_message(role=r, content=c) for r, c in encoded]
    )
    size = 2 * sum(len(r) + len(c) for r, c in encoded) + 256
    buf = ctypes.create_string_buffer(size)
    n = llama_cpp.llama_chat_apply_template(name.encode(), chat, len(encoded), add_generation_prompt, buf, size)
    if n > size:  # the return value is the size it needs
        buf = ctypes.create_string_buffer(n)
        n = llama_cpp.llama_chat_apply_template(name.encode(), chat, len(encoded), add_generation_prompt, buf, n)
    if n < 0:
        raise DriftError(f"chat template '{name}' cannot render this conversation")
    return buf.raw[:n].decode("utf-8")
