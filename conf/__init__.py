"""Hydra configs of the benchmark (``pkg://conf``).

Importing the package registers the resolvers the configs use (``${icm_overrides:}``,
``${icm_shard_suffix:…}``, see benchmark/hydra_names.py). Hydra imports this package before it
reads any file from it, so every way of composing these configs (the command line, the compose
API, a submitit or Ray job on another machine) has them.
"""

import benchmark.hydra_names  # noqa: F401
