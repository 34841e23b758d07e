"""Developer tools that ship with dslc (run with `python -m dslc.tools.<name>`)."""
