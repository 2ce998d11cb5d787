"""What every LLVM target shares: the LLVMTarget base (module setup, optimisation, machine
code), scalar expressions (scalar.py), inlined math polynomials (math.py), loop-kernel
statements (kernels.py) and IR-building helpers (loops.py). compiler/cpu/ builds on it."""
