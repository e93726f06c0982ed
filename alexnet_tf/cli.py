"""What the entry points share: one-line errors with meaningful exit codes."""

import contextlib
import re
import sys

from absl import flags

EXIT_USAGE = 2
EXIT_DATA = 1


def parse_flags(argv):
    """absl's flag parsing, with a bad flag reported as one line and exit status 2.

    Pass as `app.run(main, flags_parser=cli.parse_flags)`; --help and --helpfull work as usual.
    """
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        print(f"error: {error} (--helpfull lists every flag)", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def refuse_extra_arguments(argv):
    if len(argv) > 1:
        print(f"error: unexpected arguments: {' '.join(argv[1:])} (flags start with --)", file=sys.stderr)
        sys.exit(EXIT_USAGE)


@contextlib.contextmanager
def one_line_errors(verbose=False):
    """Turns the library's errors into one line on stderr and an exit code.

    Usage errors (a ValueError: bad settings, unknown names) exit 2; data and
    file errors (the data module's DataError, OSError, a non-finite loss, a
    TensorFlow runtime error such as an undecodable image or a corrupt record
    met while reading the data) exit 1; a training run stopped by SIGINT or
    SIGTERM exits 128 + the signal's number. `verbose` shows the traceback.
    """
    import tensorflow as tf

    from alexnet_tf import callbacks, data

    try:
        yield
    except callbacks.TrainingInterrupted as interruption:
        _report(interruption, 128 + interruption.signal_number, verbose, prefix="stopped")
    except (data.DataError, OSError, FloatingPointError) as error:
        _report(error, EXIT_DATA, verbose)
    except tf.errors.OpError as error:
        _report(tf_error_summary(error), EXIT_DATA, verbose, original=error)
    except ValueError as error:
        _report(error, EXIT_USAGE, verbose)


def tf_error_summary(error):
    """The useful line of a TensorFlow runtime error (without its graph-node decorations)."""
    text = getattr(error, "message", None) or str(error)
    for raw in text.splitlines():
        if raw[:1].isspace():  # the Python stack where the failing op was created
            continue
        line = re.sub(r"\{\{[^}]*\}\}\s*", "", raw).strip()
        if line and not line.startswith(("Graph execution error", "Detected at node", "[[", "<stack")):
            return line
    return type(error).__name__


def first_line(error):
    """An error's first line of text (its type's name when it has none), for one-line messages."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _report(error, code, verbose, prefix="error", original=None):
    if verbose:
        raise original or error
    print(f"{prefix}: {first_line(error)}", file=sys.stderr)
    sys.exit(code)
