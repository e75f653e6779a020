"""The code of the five seed bug reports, before and after each fix, written from the reports' text."""
