"""What the entry points share: one-line errors with meaningful exit codes."""

import contextlib
import sys

from absl import app

EXIT_USAGE = 2
EXIT_DATA = 1


def refuse_extra_arguments(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])} (flags start with --)", exitcode=EXIT_USAGE)


@contextlib.contextmanager
def one_line_errors(verbose=False):
    """Turns the library's errors into one line on stderr and an exit code.

    Usage errors (a ValueError: bad settings, unknown names) exit 2; data and
    file errors (the data module's DataError, OSError, a non-finite loss)
    exit 1. `verbose` shows the traceback as well.
    """
    from alexnet_tf import data

    try:
        yield
    except (data.DataError, OSError, FloatingPointError) as error:
        _report(error, EXIT_DATA, verbose)
    except ValueError as error:
        _report(error, EXIT_USAGE, verbose)


def _report(error, code, verbose):
    if verbose:
        raise error
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)
