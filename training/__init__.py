"""Training jobs that export the served models as versioned SavedModels."""
