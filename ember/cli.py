"""The `ember` command line (also `python -m ember`): dump and explain models.

    ember dump FILE.py:NAME --input 1x3x32x32 [--format text|dot|json|graphml|svg] [-o OUT]
    ember explain FILE.py:NAME --input 1x3x32x32

NAME is an nn.Module subclass (constructed with no arguments) or a function in FILE.py.
"""
import argparse
import contextlib
import importlib.util
import io
import os
import shutil
import subprocess
import sys


def _load_target(spec):
    import ember
    path, sep, name = spec.rpartition(":")
    if not sep or not path or not name:
        raise SystemExit(f"ember: expected FILE.py:NAME, got {spec!r}")
    if not os.path.exists(path):
        raise SystemExit(f"ember: no such file: {path}")
    module_name = "_ember_target_" + os.path.splitext(os.path.basename(path))[0]
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(loader_spec)
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    # the file may be a script that prints as it runs; keep the dump clean
    with contextlib.redirect_stdout(io.StringIO()):
        loader_spec.loader.exec_module(module)
    if not hasattr(module, name):
        found = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_"))
        raise SystemExit(f"ember: {path} has no {name!r}; callables there: {', '.join(found)}")
    target = getattr(module, name)
    if isinstance(target, type) and issubclass(target, ember.nn.Module):
        ember.manual_seed(0)
        target = target()
        target.eval()
    return target


def _inputs(shapes, dtype_name):
    import ember
    dtype = ember.dtypes.as_dtype(dtype_name)
    ember.manual_seed(0)
    tensors = []
    for text in shapes or []:
        try:
            shape = tuple(int(d) for d in text.lower().split("x") if d)
        except ValueError:
            raise SystemExit(f"ember: --input takes sizes like 1x3x32x32, got {text!r}") from None
        if dtype.is_floating_point:
            tensors.append(ember.randn(*shape, dtype=dtype))
        else:
            tensors.append(ember.randint(0, 10, shape, dtype=dtype))
    return tensors


def _render(graph, fmt):
    if fmt == "text":
        return str(graph)
    if fmt == "json":
        return graph.to_json(indent=1)
    if fmt == "dot":
        return graph.to_dot()
    if fmt == "graphml":
        return graph.to_graphml()
    if fmt == "svg":
        dot = shutil.which("dot")
        if dot is None:
            raise SystemExit("ember: --format svg needs Graphviz's `dot` program, which is not installed. "
                             "Install it (apt-get install graphviz, brew install graphviz, conda install "
                             "graphviz) or use --format dot and render it elsewhere.")
        return subprocess.run([dot, "-Tsvg"], input=graph.to_dot(), capture_output=True, text=True,
                              check=True).stdout
    raise SystemExit(f"ember: unknown format {fmt!r}")


def _write(text, out):
    if out:
        tmp = f"{out}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(text if text.endswith("\n") else text + "\n")
        os.replace(tmp, out)
    else:
        print(text)


def _training_step(model, inputs, distributed=False):
    """The model's training step: cross-entropy on its output, SGD with momentum; with
    `distributed`, of the model in DistributedDataParallel (a process group of this one rank
    unless run under mpirun), so the step holds the gradient allreduces."""
    import ember
    if not isinstance(model, ember.nn.Module):
        raise SystemExit("ember: --train needs an nn.Module target")
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


CODE_STAGES = ("llvm", "asm")  # the CPU target's code, after the passes (compiler/backends.py: render_code)


def cmd_dump(args):
    import ember
    target = _load_target(args.target)
    inputs = _inputs(args.input, args.dtype)
    if args.distributed and not args.train:
        raise SystemExit("ember: --distributed needs --train (it shows the gradient allreduces of a training step)")
    if args.train:
        graph = ember.trace(_training_step(target, inputs, args.distributed), *inputs)
    else:
        with ember.no_grad():
            graph = ember.trace(target, *inputs)
    graph.verify()
    if args.stage == "traced":
        _write(_render(graph, args.format), args.output)
        return
    if args.format != "text":
        raise SystemExit("ember: --stage other than traced prints text only; use EMBER_DUMP=DIR for DOT files")
    if args.stage in CODE_STAGES:
        from ember.compiler.backends import render_code
        _write(render_code(graph, args.stage), args.output)
        return
    from ember.passes.pipeline import render_stage
    # the autodiff stage of a forward dump shows the parameter gradients; later stages of a
    # forward dump stay forward-only (a --train dump already contains its gradients)
    _write(render_stage(graph, args.stage, differentiate=args.stage == "autodiff"), args.output)


def cmd_explain(args):
    import ember
    target = _load_target(args.target)
    inputs = _inputs(args.input, args.dtype)
    compiled = ember.compile(target)
    with ember.no_grad():
        compiled(*inputs)
    _write(str(compiled.report), args.output)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="ember", description="Dump and explain ember models.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("dump", "trace a model or function and print its IR"),
                            ("explain", "compile a model or function and print the compile report")):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("target", help="FILE.py:NAME (an nn.Module subclass or a function)")
        sub.add_argument("--input", action="append", metavar="SIZES", help="an input's sizes, e.g. 1x3x32x32")
        sub.add_argument("--dtype", default="float32", help="dtype of the inputs (default float32)")
        sub.add_argument("-o", "--output", help="write to this file instead of standard output")
        if name == "dump":
            from ember.passes.pipeline import stage_names  # every pass of the pass list is a stage
            sub.add_argument("--format", default="text", choices=("text", "dot", "json", "graphml", "svg"))
            sub.add_argument("--stage", default="traced", choices=stage_names() + CODE_STAGES,
                             help="which pipeline stage to print (default: the traced graph)")
            sub.add_argument("--train", action="store_true",
                             help="dump the model's training step (cross-entropy, SGD) instead of its forward")
            sub.add_argument("--distributed", action="store_true",
                             help="with --train: the model in DistributedDataParallel, so the step holds its "
                                  "gradient allreduces (one rank unless run under mpirun)")
    args = parser.parse_args(argv)
    {"dump": cmd_dump, "explain": cmd_explain}[args.command](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
