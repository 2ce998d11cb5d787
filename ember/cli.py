"""The `ember` command line (also `python -m ember`): dump and explain models.

    ember dump FILE.py:NAME --input 1x3x32x32 [--format text|dot|json|graphml|svg] [-o OUT]
    ember dump FILE.py:NAME --input 64x784 --target cuda --stage ptx|sass-check
    ember explain FILE.py:NAME --input 1x3x32x32 [--batch-sizes 37,64]
    ember report FILE.py:NAME --input 1x3x32x32 [--train] -o report.html

NAME is an nn.Module subclass (constructed with no arguments) or a function in FILE.py.

A mistake on the command line, or in the user's file (a syntax error, an exception on import
or in the model's forward), ends with one line saying what went wrong (after the user's own
traceback, ember's frames left out) and a non-zero exit status, never ember's traceback.
"""
import argparse
import contextlib
import importlib.util
import os
import sys
import traceback

import numpy as np

_EMBER_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # (the package's parent)


class UsageError(Exception):
    """A mistake on the command line: one line, exit status 2."""


class UserCodeError(Exception):
    """The user's file raised (on import, in the model or function): their traceback and a line."""

    def __init__(self, what, error):
        super().__init__(what)
        self.what, self.error = what, error


@contextlib.contextmanager
def _running_user_code(what):
    try:
        yield
    except (UsageError, UserCodeError, KeyboardInterrupt):
        raise
    except SystemExit as exit_:
        raise UsageError(f"{what} called sys.exit({exit_.code!r}): ember cannot dump or compile a program that "
                         f"exits; guard the script's own work with `if __name__ == '__main__':`") from None
    except Exception as error:
        raise UserCodeError(what, error) from error


def _user_frames(error):
    """The traceback entries of `error` outside ember (and outside importlib's machinery)."""
    frames = traceback.extract_tb(error.__traceback__)
    ember_dirs = tuple(os.path.join(_EMBER_DIR, d) + os.sep for d in ("ember", "frontend", "passes", "compiler",
                                                                      "runtime"))
    return [f for f in frames if not f.filename.startswith(ember_dirs) and "importlib" not in f.filename
            and not f.filename.startswith("<frozen")]


def _report_user_error(failure):
    error = failure.error
    frames = _user_frames(error)
    if isinstance(error, SyntaxError):
        where = f"{error.filename}:{error.lineno}"
        sys.stderr.write("".join(traceback.format_exception_only(type(error), error)))
        return f"{failure.what}: syntax error at {where}: {error.msg}"
    if frames:
        sys.stderr.write("Traceback (most recent call last, ember's frames left out):\n")
        sys.stderr.write("".join(traceback.format_list(frames)))
        last = frames[-1]
        where = f" at {os.path.relpath(last.filename)}:{last.lineno} ({(last.line or '').strip()})"
    else:
        where = ""
    return f"{failure.what} raised {type(error).__name__}{where}: {error}"


def _load_target(spec):
    import ember
    path, sep, name = spec.rpartition(":")
    if not sep or not path or not name:
        raise UsageError(f"expected FILE.py:NAME, got {spec!r}")
    if not os.path.exists(path):
        raise UsageError(f"no such file: {path}")
    module_name = "_ember_target_" + os.path.splitext(os.path.basename(path))[0]
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(loader_spec)
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    # the file may be a script that prints as it runs: its prints go to stderr, the dump stays clean
    with contextlib.redirect_stdout(sys.stderr), _running_user_code(f"importing {path}"):
        loader_spec.loader.exec_module(module)
    if not hasattr(module, name):
        found = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_"))
        raise UsageError(f"{path} has no {name!r}; callables there: {', '.join(found)}")
    target = getattr(module, name)
    if isinstance(target, type) and issubclass(target, ember.nn.Module):
        _check_no_arguments_needed(target, spec)
        ember.manual_seed(0)
        with _running_user_code(f"{name}()"):
            target = target()
        target.eval()
    elif isinstance(target, type) or not callable(target):
        kind = "class that is not an nn.Module subclass" if isinstance(target, type) else type(target).__name__
        raise UsageError(f"{spec}: {name} is a {kind}; name an nn.Module subclass or a function")
    return target


def _check_no_arguments_needed(cls, spec):
    import inspect
    try:
        parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
    except (TypeError, ValueError):
        return
    needed = [p.name for p in parameters if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY,
                                                                                p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if needed:
        raise UsageError(f"{spec}: {cls.__name__} needs constructor arguments ({', '.join(needed)}), and ember builds "
                         f"it with none; add a subclass or a function to the file that builds it with its arguments "
                         f"(def model(x): return {cls.__name__}(...)(x)) and name that instead")


def _check_inputs(target, inputs, spec):
    """As many --input as the forward (or function) takes positional arguments without defaults."""
    import inspect
    import ember
    function = target.forward if isinstance(target, ember.nn.Module) else target
    try:
        parameters = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        return
    if any(p.kind == p.VAR_POSITIONAL for p in parameters):
        return
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    needed = [p.name for p in positional if p.default is p.empty]
    if not needed and not inputs:
        return
    if len(inputs) < len(needed) or len(inputs) > len(positional):
        count = f"{len(needed)}" if len(needed) == len(positional) else f"{len(needed)} to {len(positional)}"
        raise UsageError(f"{spec} takes {count} input(s) ({', '.join(p.name for p in positional)}), got "
                         f"{len(inputs)} --input; give one --input SIZES per input, e.g. --input 1x3x32x32")


DTYPE_NAMES = ("float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8", "bool")


def _inputs(shapes, dtype_name):
    import ember
    if dtype_name not in DTYPE_NAMES:
        raise UsageError(f"unknown --dtype {dtype_name!r}; choose one of {', '.join(DTYPE_NAMES)}")
    dtype = ember.dtypes.as_dtype(dtype_name)
    ember.manual_seed(0)
    tensors = []
    for text in shapes or []:
        parts = text.lower().replace(" ", "").split("x")
        if text.strip().lower() == "scalar":
            parts = []
        elif not all(p.lstrip("-").isdigit() for p in parts):
            raise UsageError(f"--input takes sizes like 1x3x32x32 (or 'scalar'), got {text!r}")
        shape = tuple(int(p) for p in parts)
        if any(d < 0 for d in shape):
            raise UsageError(f"--input {text}: sizes must be non-negative integers, like 1x3x32x32")
        nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize if shape else 0
        if nbytes > 2 ** 40:
            size = f"{nbytes / 2 ** 50:.1f} PiB" if nbytes >= 2 ** 50 else f"{nbytes / 2 ** 40:.1f} TiB"
            raise UsageError(f"--input {text}: {size} of {dtype_name} is more than this machine holds")
        if dtype.is_floating_point:
            tensors.append(ember.randn(*shape, dtype=dtype))
        else:
            tensors.append(ember.randint(0, 10, shape, dtype=dtype))
    return tensors


def _write(text, out):
    if out:
        tmp = f"{out}.tmp{os.getpid()}"
        try:
            with open(tmp, "w") as f:
                f.write(text if text.endswith("\n") else text + "\n")
            os.replace(tmp, out)
        except OSError as error:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise UsageError(f"cannot write -o {out}: {error.strerror or error}") from None
    else:
        print(text)


def _training_step(model, inputs, distributed=False):
    """The model's training step: cross-entropy on its output, SGD with momentum; with
    `distributed`, of the model in DistributedDataParallel (a process group of this one rank
    unless run under mpirun), so the step holds the gradient allreduces."""
    import ember
    if not isinstance(model, ember.nn.Module):
        raise UsageError("--train needs an nn.Module target")
    model.train()
    optimizer = ember.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    if distributed:
        import ember.distributed as dist
        if not dist.is_initialized():
            dist.init_process_group("mpi")
        model = ember.nn.parallel.DistributedDataParallel(model)
    with ember.no_grad():
        classes = model(*inputs).shape[-1]
    target = ember.randint(0, classes, (inputs[0].shape[0],))

    def train_step(*batch):
        optimizer.zero_grad()
        loss = ember.nn.functional.cross_entropy(model(*batch), target)
        loss.backward()
        optimizer.step()
        return loss

    train_step(*inputs)  # the first step creates the optimizer's buffers
    return train_step


from ember.compiler.stage_rendering import CODE_STAGES, FORMATS  # noqa: E402  (kernels, llvm, asm: after the passes)

TARGET_BACKENDS = {"cpu": "llvm", "cuda": "ptx"}  # dump --target: the backend whose code stages it prints


def cmd_dump(args):
    import ember
    target = _load_target(args.entry)
    inputs = _inputs(args.input, args.dtype)
    _check_inputs(target, inputs, args.entry)
    if args.distributed and not args.train:
        raise UsageError("--distributed needs --train (it shows the gradient allreduces of a training step)")
    with _running_user_code(args.entry):
        if args.train:
            graph = ember.trace(_training_step(target, inputs, args.distributed), *inputs)
        else:
            with ember.no_grad():
                graph = ember.trace(target, *inputs)
    graph.verify()
    from ember import config
    if config.DUMP_DIR:  # EMBER_DUMP: every stage, the kernels and the code, whatever --stage shows
        from ember.compiler.backends import get_backend
        get_backend("llvm").dump(graph)
    from ember.compiler.stage_rendering import StageFormatError, code_stages_of, render
    backend = TARGET_BACKENDS[args.target]
    if args.stage in CODE_STAGES and args.stage not in code_stages_of(backend):
        raise UsageError(f"--stage {args.stage} is not a code stage of --target {args.target}; its code stages are "
                         f"{', '.join(code_stages_of(backend))}")
    try:
        # the autodiff stage of a forward dump shows the parameter gradients; later stages of a
        # forward dump stay forward-only (a --train dump already contains its gradients)
        text = render(graph, args.stage, args.format, differentiate=args.stage == "autodiff", backend=backend)
    except StageFormatError as error:
        raise UsageError(str(error)) from None
    except RuntimeError as error:  # (ptxas missing, or rejecting the PTX)
        if args.stage != "sass-check":
            raise
        raise UsageError(str(error)) from None
    _write(text, args.output)


def cmd_explain(args):
    import ember
    target = _load_target(args.entry)
    inputs = _inputs(args.input, args.dtype)
    _check_inputs(target, inputs, args.entry)
    compiled = ember.compile(target)
    with ember.no_grad(), _running_user_code(args.entry):
        compiled(*inputs)
        for batch in _batch_sizes(args.batch_sizes):  # (calls at other batch sizes: the report says which dims
            compiled(*[_with_batch(t, batch) for t in inputs])  # became dynamic, or why they stay static)
    _write(str(compiled.report), args.output)


def _batch_sizes(text):
    if not text:
        return []
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"--batch-sizes takes sizes like 37,64,5, got {text!r}") from None
    if any(size < 0 for size in sizes):
        raise UsageError(f"--batch-sizes {text}: sizes must be non-negative")
    return sizes


def _with_batch(tensor, batch):
    """`tensor` with dim 0 of size `batch` (its rows repeated or cut; a 0-d tensor as it is)."""
    import ember
    if tensor.dim() == 0:
        return tensor
    rows = np.resize(tensor.numpy(), (batch,) + tuple(tensor.shape[1:]))
    return ember.tensor(rows, dtype=tensor.dtype)


def cmd_report(args):
    """Compile the model (or its training step) and write the HTML compile report."""
    import ember
    target = _load_target(args.entry)
    inputs = _inputs(args.input, args.dtype)
    _check_inputs(target, inputs, args.entry)
    output = args.output or "ember_report.html"
    directory = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(directory) or not os.access(directory, os.W_OK):
        raise UsageError(f"cannot write -o {output}: {directory} is not a writable folder")
    with _running_user_code(args.entry):
        if args.train:
            compiled = ember.compile(_training_step(target, inputs))
            for _ in range(2):
                compiled(*inputs)
        else:
            compiled = ember.compile(target)
            with ember.no_grad():
                for _ in range(2):
                    compiled(*inputs)
    compiled.report.to_html(output)
    print(f"ember report: wrote {output} ({os.path.getsize(output)} bytes): open it in a browser")


def cmd_export(args):
    """Export the model as a C library (ember.export_library) into the -o directory."""
    import ember
    from ember.compiler.export.library import ExportError, c_identifier
    target = _load_target(args.entry)
    inputs = _inputs(args.input, args.dtype)
    _check_inputs(target, inputs, args.entry)
    if not args.output:
        raise UsageError("give the directory to write with -o DIR")
    from ember.compiler.cpu.host import level_features
    if args.cpu != "host":
        try:
            level_features(args.cpu)
        except ValueError as error:
            raise UsageError(f"--cpu: {error}") from None
    name = c_identifier(args.entry.rpartition(":")[2])
    try:
        with _running_user_code(args.entry):
            paths = ember.export_library(target, tuple(inputs), args.output, dynamic_batch=args.dynamic_batch,
                                         weights=args.weights, cpu=args.cpu, name=name)
    except UserCodeError as failure:
        if isinstance(failure.error, ExportError):
            raise ExportFailed(str(failure.error)) from None
        raise
    sizes = ", ".join(f"{os.path.basename(p)} ({os.path.getsize(p)} bytes)" for p in paths)
    print(f"ember export: wrote {args.output}: {sizes}")


class ExportFailed(Exception):
    """The model cannot be exported as asked (one line says why)."""


def main(argv=None):
    parser = argparse.ArgumentParser(prog="ember", description="Dump, explain, report on and export ember models.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("dump", "trace a model or function and print its IR"),
                            ("explain", "compile a model or function and print the compile report"),
                            ("report", "compile a model (or its training step) and write the compile report as "
                                       "one HTML page"),
                            ("export", "compile a model into a C library (NAME.so, NAME.h, manifest.json, README) "
                                       "that runs without Python")):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("entry", metavar="FILE.py:NAME", help="an nn.Module subclass or a function in FILE.py")
        sub.add_argument("--input", action="append", metavar="SIZES", help="an input's sizes, e.g. 1x3x32x32")
        sub.add_argument("--dtype", default="float32", help="dtype of the inputs (default float32)")
        sub.add_argument("-o", "--output", help={"report": "the HTML file to write (default ember_report.html)",
                                                 "export": "the directory to write the library into"}.get(
                                                     name, "write to this file instead of standard output"))
        if name == "export":
            sub.add_argument("--dynamic-batch", action="store_true",
                             help="the library takes any batch size (dim 0 of every input and output)")
            sub.add_argument("--weights", default="embed", choices=("embed", "file"),
                             help="the weights inside the library (default) or in NAME.safetensors beside it")
            sub.add_argument("--cpu", default="host",
                             help="the CPU to compile for: host (default) or an x86-64 level such as x86-64-v3 "
                                  "(also spelled generic-x86-64-v3)")
        if name == "report":
            sub.add_argument("--train", action="store_true", help="report on the model's training step")
        if name == "explain":
            sub.add_argument("--batch-sizes", metavar="N,N,...",
                             help="also call the model at these batch sizes (dim 0 of every input): the report "
                                  "says which dims became dynamic (one program for every size), or why not")
        if name == "dump":
            from ember.passes.pipeline import stage_names  # every pass of the pass list is a stage
            sub.add_argument("--format", default="text", choices=FORMATS)
            sub.add_argument("--stage", default="traced", choices=stage_names() + CODE_STAGES,
                             help="which pipeline stage to print (default: the traced graph); code stages: "
                                  "kernels, llvm, then asm (cpu) or ptx and sass-check (cuda: ptxas's registers, "
                                  "shared memory and spills per kernel)")
            sub.add_argument("--target", default="cpu", choices=sorted(TARGET_BACKENDS),
                             help="the machine the code stages are for (default cpu)")
            sub.add_argument("--train", action="store_true",
                             help="dump the model's training step (cross-entropy, SGD) instead of its forward")
            sub.add_argument("--distributed", action="store_true",
                             help="with --train: the model in DistributedDataParallel, so the step holds its "
                                  "gradient allreduces (one rank unless run under mpirun)")
    args = parser.parse_args(argv)
    if sys.argv and sys.argv[0] and os.path.exists(sys.argv[0]):
        from ember.frontend.user_code import not_user_code
        not_user_code(sys.argv[0])  # (the console script: ops of --train's step have no model line)
    try:
        {"dump": cmd_dump, "explain": cmd_explain, "report": cmd_report, "export": cmd_export}[args.command](args)
        sys.stdout.flush()
    except UsageError as error:
        print(f"ember {args.command}: {error}", file=sys.stderr)
        return 2
    except UserCodeError as failure:
        print(f"ember {args.command}: {_report_user_error(failure)}", file=sys.stderr)
        return 1
    except ExportFailed as error:
        print(f"ember {args.command}: {error}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # (output piped into head, which has stopped reading)
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
