"""A well-behaved test plugin: several models from one callable, one from a class, one from a hook."""
