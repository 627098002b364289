"""What every Taskplane app shares: errors, problem details, API auth, logging, telemetry."""
