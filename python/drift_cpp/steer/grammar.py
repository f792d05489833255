"""Structured output: the grammars an answer can be held to, made by llama-cpp-python's own converter.

The engine applies the grammar to the fused logits (engine.h), so a personalized answer parses too.
"""

from __future__ import annotations

import json
from typing import Optional

from ..errors import DriftError


def schema_grammar(schema: Optional[object]) -> str:
    """The GBNF of a JSON schema (llama-cpp-python's json_schema_to_gbnf), or for None its grammar of any
    JSON object. A schema the converter cannot take is an error, never loosened to any JSON. The converter
    does not enforce every keyword (numeric bounds, string formats): those are not checked."""
    from llama_cpp import llama_grammar
    if schema is None:
        return llama_grammar.JSON_GBNF
    try:
        return llama_grammar.json_schema_to_gbnf(json.dumps(schema))
    except Exception as e:  # noqa: BLE001  (the converter raises assertions, value and type errors alike)
        raise DriftError(f"the schema cannot be converted to a grammar: {' '.join(str(e).split())}") from None
