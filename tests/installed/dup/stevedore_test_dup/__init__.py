"""A test plugin that collides with stevedore-test-good."""
