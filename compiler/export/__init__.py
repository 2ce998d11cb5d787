"""Exporting compiled models as C libraries: library.py (the build), c_api.py (the header),
wrapper.py (the API's implementation, LLVM IR), weights_file.py (embedded or safetensors)."""
