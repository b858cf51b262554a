"""Vertical federated training under CKKS: PSI alignment, feature coding, party cores and actors.

Import submodules directly (``fedray.vertical.protocol``, ``fedray.vertical.job``); this package
init stays import-light so ``fedray.config`` can load ``fedray.vertical.config`` without TenSEAL.
"""
