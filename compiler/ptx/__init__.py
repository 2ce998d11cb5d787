"""The PTX target: lowered loop kernels as `ptx_kernel` entries for NVIDIA GPUs (nvptx64,
sm_80 / sm_90), built on compiler/llvm like the CPU target. launches.py splits a kernel into
grid launches, kernels.py writes them, target.py optimises and emits the PTX text."""
