"""Build, convert, validate and describe grouped matting datasets: ``python -m data_tools <command>``.

Every command writes the manifest v2 of :mod:`benchmark.datasets.manifest` through
:class:`data_tools.build.DatasetBuilder` and reuses the value types of :mod:`benchmark.types`; see
``data_tools/README.md``.
"""
