"""Build, convert and validate grouped matting datasets (planned).

Datasets are described by the manifest format of :mod:`benchmark.datasets.manifest`
(``write_manifest`` / ``load_manifest``); tools here must write exactly that format and reuse the
value types of :mod:`benchmark.types`.
"""
