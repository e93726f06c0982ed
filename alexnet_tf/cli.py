"""What the entry points share: one-line errors with meaningful exit codes, and --help."""

import contextlib
import os
import re
import sys

from absl import app, flags

EXIT_USAGE = 2
EXIT_DATA = 1


def parse_flags(argv, help_groups=()):
    """absl's flag parsing, with a bad flag reported as one line and exit status 2.

    Pass as `app.run(main, flags_parser=cli.parse_flags)`, or through
    `functools.partial` to give `help_groups`. --help prints the main
    module's docstring and its key flags (those it defines or adopts with
    `flags.adopt_module_key_flags`), under the headings of `help_groups`,
    ((heading, flag names), ...), with the rest under "other" (under "flags"
    when there are no groups); --helpfull prints every flag, absl's own
    included, as absl does. Both exit 0.
    """
    _define_help_flags(help_groups)
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        print(f"error: {error} (--help lists the flags)", file=sys.stderr)
        sys.exit(EXIT_USAGE)


class _HelpFlag(flags.BooleanFlag):
    """--help (and -?, --helpshort): `help_text`, then exit 0."""

    def __init__(self, name, short_name, groups):
        super().__init__(name, False, "Show this help: this command's own flags.", short_name=short_name)
        self.groups = groups

    def parse(self, argument):
        super().parse(argument)
        if self.value:
            _show_help(lambda: print(help_text(self.groups)))


class _HelpfullFlag(flags.BooleanFlag):
    """--helpfull: absl's full help, but exiting 0 as --help does."""

    def __init__(self):
        super().__init__("helpfull", False, "Show every flag, absl's own included.")

    def parse(self, argument):
        super().parse(argument)
        if self.value:
            _show_help(lambda: app.usage(writeto_stdout=True))


def _show_help(write):
    try:
        write()
        sys.stdout.flush()
    except BrokenPipeError:
        # `--help | head` stopped reading: no error, and nothing for Python to fail to flush at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(0)


def _define_help_flags(groups):
    # absl's --help lists only the flags the main module defines itself (train.py's are
    # defined in config.py) and exits 1: replace it, and --helpfull for the exit status.
    app.define_help_flags()  # absl's set, so that --helpxml and --only_check_flags stay
    for name in ("help", "?", "helpshort", "helpfull"):
        if name in flags.FLAGS:
            delattr(flags.FLAGS, name)
    # Registered under absl.app, where --helpfull listed absl's own.
    flags.DEFINE_flag(_HelpFlag("help", "?", groups), module_name=app.__name__)
    flags.DEFINE_flag(_HelpFlag("helpshort", None, groups), module_name=app.__name__)
    flags.DEFINE_flag(_HelpfullFlag(), module_name=app.__name__)


def help_text(groups=(), flag_values=flags.FLAGS):
    """The main module's docstring, then its key flags under the headings of `groups`.

    `groups`: ((heading, flag names), ...); the main module's other key
    flags follow under "other" ("flags" when there are no groups), in the
    order they were defined.
    """
    sections = []
    shown = set()
    for heading, names in groups:
        sections.append((heading, [flag_values[name] for name in names]))
        shown.update(names)
    rest = [flag for flag in flag_values.get_key_flags_for_module(sys.argv[0]) if flag.name not in shown]
    if rest:
        sections.append(("other" if groups else "flags", rest))
    lines = [(sys.modules["__main__"].__doc__ or f"{sys.argv[0]} [flags]").rstrip(), ""]
    for heading, section_flags in sections:
        lines.append(f"{heading}:")
        lines.extend(_describe_flag(flag) for flag in section_flags)
        lines.append("")
    lines.append("--helpfull lists every flag, absl's own included.")
    return "\n".join(lines)


def _describe_flag(flag):
    name = f"--[no]{flag.name}" if flag.boolean else f"--{flag.name}"
    notes = [f"default: {flag.default_as_str}"] if flag.default_as_str else []
    if flag.parser.syntactic_help:
        notes.append(flag.parser.syntactic_help)
    text = f"{name}: {flag.help}" + (f" ({'; '.join(notes)})" if notes else "")
    return flags.text_wrap(text, indent="      ", firstline_indent="  ")


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
        # An eager op's error ends with its name: "... [Op:DecodeImage] name: ".
        line = re.sub(r"\s*\[Op:[^\]]*\](\s*name:.*)?$", "", line)
        if line and not line.startswith(("Graph execution error", "Detected at node", "[[", "<stack")):
            return _assertion_message(line)
    return type(error).__name__


def _assertion_message(line):
    """A failed `tf.debugging.Assert`'s message as plain words: its parts come C-escaped and
    bracketed ("assertion failed: [file] [it\\'s.JPEG]"), and a path should read as it is."""
    parts = re.fullmatch(r"assertion failed: \[(.*)\]", line)
    if not parts:
        return line
    unescape = {"n": "\n", "t": "\t", "r": "\r"}
    return " ".join(
        re.sub(r"\\([0-7]{3}|.)", lambda m: chr(int(m[1], 8)) if len(m[1]) == 3 else unescape.get(m[1], m[1]), part)
        for part in parts[1].split("] [")
    )


def first_line(error):
    """An error's first line of text (its type's name when it has none), for one-line messages."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _report(error, code, verbose, prefix="error", original=None):
    if verbose:
        raise original or error
    print(f"{prefix}: {first_line(error)}", file=sys.stderr)
    sys.exit(code)
