"""The CPU target (target.py): the host's LLVM code with its entry ABI (program.py), OpenMP
threads (openmp.py), sgemm and convolution kernels (sgemm.py, conv.py, conv_direct.py) built
into a support library (support_library.py, library.py), and the linker (linker.py)."""
