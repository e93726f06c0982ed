"""The LRN layer's own CPU kernel (`kernels/lrn.cc`): built on first use, cached, loaded.

`ops()` returns the loaded op library, building it with the machine's C++
compiler (about 10 s, once per source, TensorFlow version and CPU level)
into ``$ALEXNET_TF_CACHE`` (default ``~/.cache/alexnet_tf``). `ops()` is
None, and `unavailable_reason()` says why in one line, where it cannot be
built or loaded (no compiler, not Linux, ...): the layer's ``"auto"``
then uses its XLA form. `enable(False)` turns the kernel off for ``"auto"``
in this process: a SavedModel written from a model whose LRN layers use
the kernel needs it wherever it is loaded (`serving.Predictor`, which
`predict --export` saves, uses the XLA form for that reason).

The build targets the CPU level this machine has (x86-64-v4 with AVX-512,
v3 with AVX2, or the compiler's default), and the level is part of the
cache key, so a cache shared between machines never hands a CPU code it
cannot run. Any failure to build or load falls back to the XLA form
with its reason; nothing here raises.
"""

import functools
import hashlib
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile

SOURCE = pathlib.Path(__file__).parent / "kernels" / "lrn.cc"
CACHE_ENV = "ALEXNET_TF_CACHE"
# GCC vectorises the kernel's per-channel loops only without errno and trapping maths
# (neither is observable from TensorFlow); -w: TensorFlow's headers warn by the hundred.
COMPILE_FLAGS = ("-shared", "-fPIC", "-O3", "-fno-math-errno", "-fno-trapping-math", "-w")
# The flags each x86-64 micro-architecture level needs (/proc/cpuinfo names), v2's included.
X86_64_V2_FLAGS = {"cx16", "lahf_lm", "popcnt", "sse4_1", "sse4_2", "ssse3"}
X86_64_V3_FLAGS = X86_64_V2_FLAGS | {"abm", "avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "movbe", "xsave"}
X86_64_V4_FLAGS = X86_64_V3_FLAGS | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}

_enabled = True
_failure = None


def enable(enabled=True):
    """Whether the layer's "auto" may use this kernel in this process."""
    global _enabled
    _enabled = bool(enabled)


def enabled():
    return _enabled


def cpu_level():
    """-march value for this machine's x86-64 level ("x86-64-v4", "x86-64-v3"), or None."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return None
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    if X86_64_V4_FLAGS <= flags:
        return "x86-64-v4"
    if X86_64_V3_FLAGS <= flags:
        return "x86-64-v3"
    return None


def compile_command(output, level=None):
    """The compiler command line that builds the kernel library into `output`."""
    import tensorflow as tf

    compiler = os.environ.get("CXX", "g++")
    arch = [f"-march={level}"] if level else []
    return [
        compiler,
        *COMPILE_FLAGS,
        *arch,
        *tf.sysconfig.get_compile_flags(),
        str(SOURCE),
        "-o",
        str(output),
        *tf.sysconfig.get_link_flags(),
    ]


def library_path(level=None):
    """Where the library for this source, compiler, TensorFlow build and CPU is cached."""
    key = hashlib.sha256()
    key.update(SOURCE.read_bytes())
    key.update("\n".join(compile_command("lrn.so", level)).encode())  # compiler, flags, TensorFlow's paths and ABI
    key.update("\n".join(_build_identity()).encode())
    cache = pathlib.Path(os.environ.get(CACHE_ENV) or pathlib.Path.home() / ".cache" / "alexnet_tf")
    return cache / "kernels" / f"lrn-{key.hexdigest()[:16]}.so"


def _build_identity():
    """The parts of the cache key the command line does not show: machine, TensorFlow build, compiler version."""
    import tensorflow as tf

    compiler = os.environ.get("CXX", "g++")
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, timeout=30).stdout.decode(errors="replace")
    except (OSError, subprocess.SubprocessError):
        version = "no compiler"
    return [platform.machine(), tf.__version__, tf.version.GIT_VERSION, version.splitlines()[0] if version else ""]


def build(path, level=None):
    """Compiles the library into `path` (atomically: concurrent builders each write their own file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
        partial = pathlib.Path(scratch) / path.name
        command = compile_command(partial, level)
        if shutil.which(command[0]) is None:
            raise RuntimeError(f"no C++ compiler {command[0]!r} on PATH (set CXX)")
        print(f"Building the LRN kernel into {path} (once) ...", file=sys.stderr, flush=True)
        result = subprocess.run(command, capture_output=True, text=True, errors="replace", timeout=600)
        if result.returncode != 0:
            last_lines = " | ".join(result.stderr.strip().splitlines()[-3:])
            raise RuntimeError(f"{command[0]} failed ({last_lines})")
        os.replace(partial, path)


@functools.cache
def _load():
    global _failure
    if platform.system() != "Linux":
        _failure = f"built only on Linux, not {platform.system()}"
        return None
    try:
        import tensorflow as tf

        level = cpu_level()
        path = library_path(level)
        if path.exists():
            try:
                return tf.load_op_library(str(path))
            except (OSError, tf.errors.NotFoundError):
                path.unlink(missing_ok=True)  # a damaged or foreign file: built again below
        build(path, level)
        return tf.load_op_library(str(path))
    except Exception as error:  # noqa: BLE001  (any failure means the XLA form, with the reason kept)
        _failure = f"{type(error).__name__}: {error}".splitlines()[0]
        return None


def ops():
    """The loaded kernel library (its ops `alexnet_lrn_forward`, `alexnet_lrn_backward`), or None."""
    return _load()


def unavailable_reason():
    """One line saying why `ops()` is None (None while it is not)."""
    _load()
    return _failure


if __name__ == "__main__":
    # make install runs this, so that the first training run or test does not pay the build.
    library = ops()
    level = cpu_level()
    if library is None:
        print(f"LRN kernel unavailable ({unavailable_reason()}): the LRN layer uses its XLA form on CPU.")
    else:
        print(f"LRN kernel ready: {library_path(level)} (CPU level {level or 'compiler default'}).")
