"""Exporting compiled models as C libraries: c_api.py (header and wrapper), weights_file.py, library.py (the build)."""
