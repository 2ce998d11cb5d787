"""The PTX target: lowered loop kernels as `ptx_kernel` entries for NVIDIA GPUs (nvptx64,
sm_80 / sm_90), built on compiler/llvm like the CPU target. launches.py splits a kernel into
launches and picks each one's mode (grid, rows, block, tiles, columns, thread), row_fusion.py
merges runs of row kernels, kernels.py writes the entries with block_statements.py (block-shared
reductions), tiled_matmul.py (contractions through shared memory) and split_reductions.py (long
reductions over many blocks), target.py optimises and emits the PTX text and loads it through
runtime/cuda_driver.py; ptxas_check.py runs ptxas for `ember dump --stage sass-check`."""
