"""`vigil demo`: both cascades on a broker (``run``), the fall topology's part (``falls``), the read-back
of every output topic (``watch``) and the HTML report (``report``)."""
