"""`vigil evaluate`: the published protocols (PRONOSTIA, SKAB, CWRU) run through the workers' own stages."""
