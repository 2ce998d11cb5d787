"""ember.runtime: loading and calling compiled programs with ctypes. cpu_program.py runs CPU
programs; cuda_driver.py binds the CUDA driver and cuda_program.py runs GPU programs on it (or
on emulated_cuda.py's device, which grid_emulator.py backs on this CPU); program_spec.py is
what both runners share; communicator.py and thread_runtime.py serve distributed and threaded
programs; exported_library.py and shared_library.py load libraries."""
