"""The coordinator methods: one coordinator class and one client class each; they are registered by
name, with their options, in p2pfl/registry.py."""
