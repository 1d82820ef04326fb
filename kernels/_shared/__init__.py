"""Internal pieces every tangentless package uses, with one home each: atomic writes
(:mod:`.atomic`), checksums (:mod:`.digest`), image checks and scaling (:mod:`.images`), the one
standardization (:mod:`.standardize`), batch norm (:mod:`.batch_norm`), defaults
(:mod:`.defaults`), estimator persistence as arrays + JSON (:mod:`.persist`) and the one training
loop that the ISTC models and the CNNs drive with their own step functions (:mod:`.training`).

It imports nothing else of tangentless, so any package may import it. Not public API: users import
the names its packages re-export.
"""
