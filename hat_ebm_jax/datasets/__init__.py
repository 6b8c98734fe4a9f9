"""Dataset sources that ship with the package (no downloads): digits and 2D toys."""
