"""Internal pieces every tangentless package uses, with one home each: atomic writes
(:mod:`.atomic`), checksums (:mod:`.digest`), image checks and scaling (:mod:`.images`), defaults
(:mod:`.defaults`), estimator persistence as arrays + JSON (:mod:`.persist`).

It imports nothing else of tangentless, so any package may import it. Not public API: users import
the names its packages re-export.
"""
