"""``python -m benchmark.report RUN_DIR... --out DIR``: a self-contained, offline HTML report of run folders.

Modules, one job each: :mod:`.data` (run folders → frames), :mod:`.figures` (the one figure implementation,
also behind ``benchmark.visualize``), :mod:`.thumbs` (thumbnails cached by content hash), :mod:`.plots`
(matplotlib), :mod:`.html` (escaping, tables, page frame, CSS/JS), :mod:`.pages` and :mod:`.gallery` (the
pages), :mod:`.build` (putting it together). Importing this package imports none of them.
"""
