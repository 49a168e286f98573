"""Traffic signals: timing plans and their checks, and the crossing's safety card."""
