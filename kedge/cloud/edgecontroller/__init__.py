"""edgecontroller: pods bound to edge nodes (and what they reference) down the tunnel, status back up."""
