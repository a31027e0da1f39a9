"""MAM — Matting Anything (SHI-Labs/Matting-Anything): SAM plus the Mask-to-Matte head.

:mod:`.m2m` is the M2M head with the official parameter names (the released checkpoint loads strictly);
:mod:`.method` is the adapter (``method=mam``), with the official inference data flow and refinement.
Which files go where: ``methods/peers/mam.md``.
"""
