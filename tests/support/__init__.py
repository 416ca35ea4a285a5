"""Helpers every test tier shares: local servers, process groups, fixtures' data."""
