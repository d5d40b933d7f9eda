"""plasticlm."""
