"""`drift-cpp serve`: the OpenAI-compatible server, its options checked before any model loads."""

from __future__ import annotations

import os
from pathlib import Path

import click

from .. import params
from ..errors import DriftError
from .group import main, one_line_errors
from .options import (DriftConfig, attribute_set, build_formula, checked, llm_option, model_options, no_cache_option,
                      open_cache, open_model, open_scorer, options_from, slm_option)


def _api_key(ctx, param, value):
    """An empty key, given or in the environment (where click reads it as unset), would serve without one."""
    if value == "" or (value is None and os.environ.get(param.envvar) == ""):
        raise click.BadParameter(f"empty (here or in {param.envvar}): give a key, or unset both to serve without one",
                                 param=param)
    return value


@main.command()
@click.option("--profiles", "profiles_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Directory of the users' profiles: DIR/<user>.json, with their pairs in DIR/<user>.pairs.jsonl.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (localhost: this machine only).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--api-key", default=None, envvar="DRIFT_CPP_API_KEY", callback=_api_key,
              help="Require 'Authorization: Bearer KEY' (or set DRIFT_CPP_API_KEY).")
@click.option("--max-body-bytes", type=click.IntRange(1), default=params.DEFAULT_MAX_BODY_BYTES, show_default=True,
              help="Refuse request bodies over this size (HTTP 413) before reading them.")
@llm_option
@slm_option
@click.option("--beta", type=float, default=params.DEFAULT_BETA, show_default=True,
              help="Personalization strength 1/beta, unless a request gives its own 'beta'.",
              callback=checked("params", "check_beta"))
@click.option("--top-attributes", type=int, default=None, help="Attributes used (default: each profile's).")
@click.option("--system", default=None, help="The LLM's system prompt (default: the base prompt).")
@click.option("--slots", type=click.IntRange(1, 1024), default=params.DEFAULT_SLOTS, show_default=True,
              help="Requests decoded together per layout; each slot holds --n-ctx KV cells per sequence.")
@click.option("--attributes", "attributes_file", type=click.Path(), help="More attributes for new profiles.")
@click.option("--include", help="New profiles score only these attribute ids (comma-separated).")
@no_cache_option
@options_from(params.EngineOptions)
@click.pass_context
@one_line_errors
def serve(ctx, profiles_dir, host, port, api_key, max_body_bytes, slots, attributes_file, include, no_cache,
          **options):
    """An OpenAI-compatible server (/v1/chat/completions, /v1/models) that personalizes by the request's 'user'."""
    try:
        from .. import server
    except ImportError as e:
        raise DriftError(f"serve needs the server extra: pip install 'drift-cpp[server]' ({e})") from None
    from ..steer.batching import Batcher
    cfg = DriftConfig(**options)
    build_formula(cfg)  # checks --system, --top-attributes and the engine options before any model loads
    attrs = attribute_set(attributes_file, include, None)
    batcher = Batcher(open_model(ctx, cfg.llm), open_model(ctx, cfg.slm), params.EngineOptions(cfg.n_ctx, cfg.n_batch),
                      model_options(ctx).n_threads, slots)
    app = server.Server(profiles=Path(profiles_dir), batcher=batcher, attributes=attrs, system=cfg.system,
                        make_scorer=lambda: open_scorer(ctx, cfg.slm, open_cache(no_cache)), beta=cfg.beta,
                        top_attributes=cfg.top_attributes, api_key=api_key)
    server.serve(app, host, port, max_body_bytes)
