"""The regional_widgets test suite (run by `make test`)."""
