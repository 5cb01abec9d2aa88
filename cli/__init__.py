"""The `kbench` command line (a thin Click layer over the library)."""
