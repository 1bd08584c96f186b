"""`vigil evaluate`: the published protocols (PRONOSTIA, SKAB, CWRU, SisFall) run through the workers' own
stages, and ``report``, which regenerates docs/evaluation.md."""
