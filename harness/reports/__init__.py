"""Report files: the run as data (`document`), as Markdown, as JUnit XML, and the directory holding them."""
