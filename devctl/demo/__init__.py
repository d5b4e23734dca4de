"""Demo data for DevConnect, made through the running API (`devctl seed demo`)."""
