"""A test plugin whose entry point cannot be imported."""
