"""The command group and its error policy: bad input is one line on stderr, never a traceback."""

from __future__ import annotations

import sys
from functools import wraps

import click

from ..errors import DriftError


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def one_line_errors(f):
    """Bad input ends in one line on stderr, never a traceback (exit 1); a bug in drift-cpp exits 2."""
    @wraps(f)
    def run(*args, **kwargs):
        try:
            return f(*args, **kwargs)
        except DriftError as e:
            click.echo(f"error: {one_line(e)}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("\ninterrupted", err=True)
            sys.exit(130)
        except BrokenPipeError:  # the reader left (drift-cpp ... | head): nothing to say, nowhere to say it
            sys.stdout = None  # so that the interpreter's exit does not flush into the closed pipe again
            sys.exit(141)
        except Exception as e:  # the last resort: the real causes are DriftErrors
            click.echo(f"error: internal error ({type(e).__name__}): {one_line(e)}; please report it", err=True)
            sys.exit(2)
    return run


_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2


class _Main(click.Group):
    """Usage errors (a bad option value, an unknown command) are one line too, exit 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _NO_ARGS_IS_HELP as e:  # a bare group: its help, as click shows it
            e.show()
            sys.exit(e.exit_code)
        except click.ClickException as e:
            click.echo(f"error: {one_line(e.format_message())}", err=True)
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("\ninterrupted", err=True)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=_Main)
@click.option("--verbose", is_flag=True, help="Show llama.cpp's own log (or set DRIFT_CPP_LOG=1).")
@click.option("--threads", type=click.IntRange(0, 1024), default=0, help="CPU threads (0: one per CPU core).")
@click.option("--n-gpu-layers", type=click.IntRange(-1, 100000), default=0,
              help="Layers to offload to the accelerator llama-cpp-python was built with (-1: all).")
@click.option("--chat-template", default=None,
              help="Built-in llama.cpp template (gemma, chatml, llama3, ...) for a GGUF that has none.")
@click.pass_context
def main(ctx, verbose, threads, n_gpu_layers, chat_template):
    """Personalized generation with Drift on a laptop: no training, a few dozen preference pairs."""
    from .. import runtime
    if verbose:
        runtime.set_verbose(True)
    ctx.obj = {"threads": threads, "n_gpu_layers": n_gpu_layers, "chat_template": chat_template}
