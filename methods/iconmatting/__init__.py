"""IconMatting (CVPR 2024 "In-Context Matting") re-implemented on current diffusers.

Modules, one job each: :mod:`.decoder` (in-context decoder, official key names),
:mod:`.checkpoint` (strict loading), :mod:`.roi` (reference RoI tokens),
:mod:`.attention` (memory-light self-attention capture), :mod:`.features` (SD 2.1 feature
extractor), :mod:`.preprocess` (working frame), :mod:`.method` (benchmark adapter),
:mod:`.golden`/:mod:`.parity` (golden parity), :mod:`.tiny` (tiny test model).
Heavy imports (torch, diffusers) happen only when a submodule is imported.
"""
